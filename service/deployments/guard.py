"""Prompt guards in deployment versions: a takedown served within seconds, before its erasure (zerase.serve.guard).

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
from service.erasures.contract import EventKind, JobStatus
from service.erasures.lifecycle import add_event
from service.erasures.models import ErasureJob

IMMEDIATE = "immediate"
CALIBRATING = "calibrating"  # a guard entry served before a generation process has calibrated it


class Stage:
    """Where a takedown stands, as the console and GET /erasures/{id} show it."""

    REQUESTED, GUARDED, TRAINED, DEPLOYED, CANCELLED = "requested", "guarded", "trained", "deployed", "cancelled"


class NotGuarded(Conflict):
    pass


def guard(db: Session, job: ErasureJob, actor: Actor) -> ErasureJob:
    """Put `job`'s concept under the prompt guard: a new version (the active one's erasures + this entry),
    activated at once. Committed, audited. The entry's threshold is calibrated where the model runs (each
    generation process, deterministically: `GenerationService`), which applies it only if it passes its own
    check and records the outcome on the job (`record_calibration`)."""
    serialize_writes(db)
    previous = deployments.active_row(db, lock=True).version or BASE_VERSION
    base = deployments.get(db, previous) if previous != BASE_VERSION else None
    entry = {"erasure_id": job.id, "concept": job.concept, "category": job.category,
             "anchor": job.config.get("anchor")}
    kept = [g for g in (base.guard or []) if g["erasure_id"] != job.id] if base else []
    version = deployments.derive(db, base, [*kept, entry], actor, f"guard {job.id} ({job.concept})")
    job.mitigation = {"stage": CALIBRATING, "version": version.version, "guarded_at": utcnow().isoformat()}
    record(db, actor, "guard.add", job.id, {"version": version.version})
    activated = deployments.point_to(db, version.version, previous, actor, "guard")
    db.commit()
    events.publish(activated)
    return job


def record_calibration(db: Session, outcomes: dict[str, dict[str, Any]]) -> None:
    """A generation process's calibration of guard entries, {erasure_id: {"passes", "calibration", "misses"}},
    written to jobs that wait for it (the first process to calibrate records it; the others find it done).
    Committed."""
    for erasure_id, outcome in outcomes.items():
        job = db.get(ErasureJob, erasure_id, with_for_update=True)
        if job is None or not job.mitigation or job.mitigation.get("stage") != CALIBRATING:
            continue
        stage = "guarded" if outcome["passes"] else "refused"
        job.mitigation = {**job.mitigation, "stage": stage, "calibration": outcome["calibration"],
                          **({} if outcome["passes"] else {"detail": "; ".join(outcome["misses"])})}
        message = (f"prompt guard live in version {job.mitigation['version']}" if outcome["passes"] else
                   f"prompt guard not applied: {job.mitigation['detail']}; the concept is served until the "
                   "erasure is deployed")
        add_event(db, erasure_id, EventKind.INFO if outcome["passes"] else EventKind.ERROR, message,
                  {"guard": stage})
    db.commit()


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
        guarded (its guard is served), cancelled, requested (neither yet: its guard was refused, or a failed
        job's guard was ended); None for a job that asked for no mitigation."""
        if job.mitigate != IMMEDIATE:
            return None
        if job.id in self.erasures:
            return Stage.DEPLOYED
        if job.status == JobStatus.SUCCEEDED:
            return Stage.TRAINED
        if job.status == JobStatus.CANCELLED:
            return Stage.CANCELLED
        live = job.id in self.guarded and (job.mitigation or {}).get("stage") in ("guarded", CALIBRATING)
        return Stage.GUARDED if live else Stage.REQUESTED


def on_job_finished(event: JobFinished) -> None:
    """A cancelled takedown ends its guard (a failed one keeps it: the concept must still not appear; retry it,
    or end the guard by hand)."""
    if event.status != JobStatus.CANCELLED:
        return
    with session_factory(event.database_url)() as db:
        unguard(db, event.job_id, Actor(f"cancel ({event.requested_by})"), "the takedown was cancelled")
