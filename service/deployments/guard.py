"""Prompt guards in deployment versions: a takedown served within seconds, before its erasure (zerase.guard).

A guard entry belongs to a version as an erasure does. Adding or ending one makes a new version that serves the
active erasures exactly as before (same fused patch, same judgement as served: nothing about the patch changes, so
the deploy gate and four-eyes approvals, which judge patches, have nothing new to judge; the guard's own check is
its calibration) and activates it at once. Versions stay immutable: a rollback serves the guard it had. Deploying
the takedown's erasure retires its entry (the trained patch takes over, deployments.service.carried_guard);
cancelling the takedown, or a moderator, ends it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from service.audit.service import Actor, record
from service.core import events
from service.core.db import serialize_writes, session_factory
from service.core.errors import Conflict
from service.core.events import JobFinished
from service.core.tables import utcnow
from service.deployments import service as deployments
from service.deployments.contract import BASE_VERSION
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob

IMMEDIATE = "immediate"


class Stage:
    """Where a takedown stands, as the console and GET /erasures/{id} show it."""

    REQUESTED, GUARDED, TRAINED, DEPLOYED = "requested", "guarded", "trained", "deployed"


class NotGuarded(Conflict):
    pass


def guard(db: Session, job: ErasureJob, calibration: dict[str, Any], passes: bool, misses: list[str],
          actor: Actor) -> ErasureJob:
    """Put `job`'s concept under the prompt guard: a new version (the active one's erasures + this entry),
    activated; or, when its calibration misses the guard's own check, nothing served and the job says why.
    Committed, audited."""
    serialize_writes(db)
    if not passes:
        job.mitigation = {"stage": "refused", "calibration": calibration, "detail": "; ".join(misses)}
        record(db, actor, "guard.refused", job.id, {"misses": misses})
        db.commit()
        return job
    previous = deployments.active_row(db, lock=True).version or BASE_VERSION
    base = deployments.get(db, previous) if previous != BASE_VERSION else None
    entry = {"erasure_id": job.id, "concept": job.concept, "category": job.category,
             "anchor": job.config.get("anchor"), "threshold": calibration["threshold"], "calibration": calibration}
    kept = [g for g in (base.guard or []) if g["erasure_id"] != job.id] if base else []
    version = deployments.derive(db, base, [*kept, entry], actor, f"guard {job.id} ({job.concept})")
    job.mitigation = {"stage": "guarded", "version": version.version, "calibration": calibration,
                      "guarded_at": utcnow().isoformat()}
    record(db, actor, "guard.add", job.id, {"version": version.version, "threshold": calibration["threshold"]})
    activated = deployments.point_to(db, version.version, previous, actor, "guard")
    db.commit()
    events.publish(activated)
    return job


def unguard(db: Session, erasure_id: str, actor: Actor, why: str) -> int | None:
    """End `erasure_id`'s guard entry in the active version: a new version without it, activated (its version;
    None when the active version guards nothing for it). Committed, audited."""
    serialize_writes(db)
    previous = deployments.active_row(db, lock=True).version or BASE_VERSION
    base = deployments.get(db, previous) if previous != BASE_VERSION else None
    current = list(base.guard or []) if base else []
    if not any(g["erasure_id"] == erasure_id for g in current):
        db.commit()
        return None
    version = deployments.derive(db, base, [g for g in current if g["erasure_id"] != erasure_id], actor,
                                 f"guard of {erasure_id} ended: {why}")
    record(db, actor, "guard.end", erasure_id, {"version": version.version, "why": why})
    job = db.get(ErasureJob, erasure_id)
    if job is not None and job.mitigation:
        job.mitigation = {**job.mitigation, "stage": "ended", "ended": why, "ended_in": version.version}
    activated = deployments.point_to(db, version.version, previous, actor, "guard")
    db.commit()
    events.publish(activated)
    return version.version


def end_guard(db: Session, erasure_id: str, actor: Actor) -> int:
    """A moderator ends a takedown's guard (e.g. a failed erasure they will not retry): 409 if it has none."""
    version = unguard(db, erasure_id, actor, f"ended by {actor.name}")
    if version is None:
        raise NotGuarded(f"erasure {erasure_id} has no guard in the active deployment", "id", "path")
    return version


@dataclass(frozen=True)
class Served:
    """The active version's erasures and guarded takedowns, by erasure id."""

    erasures: frozenset[str] = frozenset()
    guarded: frozenset[str] = frozenset()

    @classmethod
    def now(cls, db: Session) -> Served:
        active = deployments.active(db)
        if active is None:
            return cls()
        return cls(frozenset(e["erasure_id"] for e in active.entries),
                   frozenset(g["erasure_id"] for g in active.guard or []))

    def stage(self, job: ErasureJob) -> str | None:
        """`job`'s takedown stage: deployed (its erasure is served), trained (succeeded, not served yet),
        guarded (its guard is served), requested; None for a job that asked for no mitigation."""
        if job.mitigate != IMMEDIATE:
            return None
        if job.id in self.erasures:
            return Stage.DEPLOYED
        if job.status == "succeeded":
            return Stage.TRAINED
        return Stage.GUARDED if job.id in self.guarded else Stage.REQUESTED


def on_job_finished(event: JobFinished) -> None:
    """A cancelled takedown ends its guard (a failed one keeps it: the concept must still not appear; retry it,
    or end the guard by hand)."""
    if event.status != JobStatus.CANCELLED:
        return
    with session_factory(event.database_url)() as db:
        unguard(db, event.job_id, Actor(f"cancel ({event.requested_by})"), "the takedown was cancelled")
