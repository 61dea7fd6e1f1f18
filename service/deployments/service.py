"""Deployments: immutable, numbered sets of succeeded erasures, and which one generation serves.

Creating a deployment records each erasure's artifact (uri, sha256) and weight, so a later change
to a job never changes what a version means. Activating only moves the single `active_deployment`
row: rollback and roll-forward create no new version. Version 0 is the base model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit.service import Actor, record
from service.core import events
from service.core.db import serialize_writes
from service.core.errors import Conflict, Forbidden, Invalid, NotFound
from service.core.tables import utcnow
from service.deployments.contract import BASE_VERSION, MAX_WEIGHT
from service.deployments.gate import GatePolicy, GateRefused, Miss, misses
from service.deployments.models import ActiveDeployment, Deployment
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob


class InvalidDeployment(Invalid):
    pass


class DeploymentConflict(Conflict):
    pass


class DeploymentNotFound(NotFound):
    pass


def create(db: Session, erasure_ids: Sequence[str], weights: Sequence[float] | None = None, *, actor: Actor,
           reason: str | None = None, gate: GatePolicy | None = None, force: bool = False) -> Deployment:
    """A new version serving `erasure_ids` (weights default to 1/N, Appendix F); not activated; committed.
    With a `gate`, the version must pass it (`gate_check`), unless an admin forces it; activating it is judged
    again."""
    serialize_writes(db)
    deployment = _create(db, erasure_ids, weights, actor=actor, reason=reason, gate=gate, force=force)
    db.commit()
    return deployment


def _create(db: Session, erasure_ids: Sequence[str], weights: Sequence[float] | None = None, *, actor: Actor,
            reason: str | None = None, field: str = "erasure_ids", gate: GatePolicy | None = None,
            force: bool = False) -> Deployment:
    if weights is not None and len(weights) != len(erasure_ids):
        raise InvalidDeployment(f"{len(weights)} weights for {len(erasure_ids)} erasures", "weights")
    for i, w in enumerate(weights or []):
        if not 0 < w <= MAX_WEIGHT:
            raise InvalidDeployment(f"weight {w} is not in (0, {MAX_WEIGHT:g}]", f"weights[{i}]")
    entries: list[dict[str, Any]] = []
    for i, erasure_id in enumerate(erasure_ids):
        if erasure_id in erasure_ids[:i]:
            raise InvalidDeployment(f"{erasure_id} is listed twice", f"{field}[{i}]")
        job = db.get(ErasureJob, erasure_id)
        if job is None:
            raise InvalidDeployment(f"no erasure job with id {erasure_id}", f"{field}[{i}]")
        if job.status != JobStatus.SUCCEEDED or not (job.artifact_uri and job.artifact_sha256):
            raise DeploymentConflict(f"erasure {erasure_id} is {job.status}; only succeeded erasures can be "
                                     "deployed", f"{field}[{i}]")
        weight = weights[i] if weights is not None else 1.0 / len(erasure_ids)
        entries.append({"erasure_id": job.id, "concept": job.concept, "weight": weight,
                        "sha256": job.artifact_sha256, "uri": job.artifact_uri})
    missed = gate_check(db, entries, actor, gate, force)
    deployment = Deployment(entries=entries, created_by=actor.name, reason=reason)
    db.add(deployment)
    db.flush()
    _audit_forced(db, actor, deployment.version, missed, "create")
    record(db, actor, "deployment.create", f"deployment:{deployment.version}",
           {"erasure_ids": list(erasure_ids), "weights": [e["weight"] for e in entries], "reason": reason})
    return deployment


def gate_check(db: Session, entries: Sequence[dict[str, Any]], actor: Actor, gate: GatePolicy | None,
               force: bool = False) -> list[Miss]:
    """The one gate check of every change to what /generate serves (create, deploy, retire, activate, and the
    approvals and auto-deploy that run them): the version as served, every entry judged. Refused (409) unless
    an admin forces it; the misses forced, for the caller to audit on the version ([]: it passes)."""
    if force and actor.role != "admin":
        raise Forbidden(f"only admin keys may force a deployment past the gate; {actor.name!r} is a "
                        f"{actor.role or 'system actor'}", "force")
    missed = gate_misses(db, entries, gate)
    if missed and not force:
        raise GateRefused(missed)
    return missed


def gate_misses(db: Session, entries: Sequence[dict[str, Any]], gate: GatePolicy | None) -> list[Miss]:
    """What the gate finds wrong with serving `entries` ([] when it passes or is off)."""
    if gate is None:
        return []
    out: list[Miss] = []
    for entry in entries:
        job = db.get(ErasureJob, entry["erasure_id"])
        out += misses(gate, entry["erasure_id"], job.evaluation if job is not None else None)
    return out


def _audit_forced(db: Session, actor: Actor, version: int, missed: list[Miss], action: str) -> None:
    # Each time, not once per version: serving a forced set again is a decision of its own.
    if missed:
        record(db, actor, "deployment.gate_forced", f"deployment:{version}",
               {"action": action, "misses": [m.to_dict() for m in missed]})


def served_entries(db: Session, version: int) -> list[dict[str, Any]]:
    """What serving `version` means ([] for the base model)."""
    return list(get(db, version).entries) if version != BASE_VERSION else []


def get(db: Session, version: int) -> Deployment:
    deployment = db.get(Deployment, version)
    if deployment is None:
        raise DeploymentNotFound(f"no deployment with version {version}", "version", "path")
    return deployment


def history(db: Session, limit: int = 100) -> list[Deployment]:
    """Newest first."""
    return list(db.scalars(select(Deployment).order_by(Deployment.version.desc()).limit(limit)))


def active_row(db: Session, lock: bool = False) -> ActiveDeployment:
    # FOR UPDATE (PostgreSQL): two deploys at once must not both build on the same active set.
    row = db.get(ActiveDeployment, 1, with_for_update=lock, populate_existing=lock)
    if row is None:  # made by migration 0002; missing means the schema is not at head
        raise RuntimeError("active_deployment row missing: run `alembic upgrade head`")
    return row


def active(db: Session) -> Deployment | None:
    """The served deployment, None for the base model."""
    version = active_row(db).version
    return get(db, version) if version is not None else None


def activate(db: Session, version: int, actor: Actor, *, gate: GatePolicy | None = None,
             force: bool = False) -> Deployment | None:
    """Serve `version` (0: the base model) from the next generation request on, if it passes the `gate`
    (`gate_check`: an admin may force it); committed."""
    serialize_writes(db)
    activated = _activate(db, version, actor, gate=gate, force=force)
    db.commit()
    events.publish(activated)
    return get(db, version) if version != BASE_VERSION else None


def _activate(db: Session, version: int, actor: Actor, *, gate: GatePolicy | None,
              force: bool = False) -> events.DeploymentActivated:
    """Judge the version and move the pointer (not committed); the event to publish once the caller has committed."""
    deployment = get(db, version) if version != BASE_VERSION else None
    previous = active_row(db, lock=True).version or BASE_VERSION
    missed = gate_check(db, deployment.entries if deployment else [], actor, gate, force)
    _audit_forced(db, actor, version, missed, "activate")
    db.execute(update(ActiveDeployment).where(ActiveDeployment.id == 1)
               .values(version=deployment.version if deployment else None, activated_by=actor.name,
                       activated_at=utcnow()))
    record(db, actor, "deployment.activate", f"deployment:{version}",
           {"version": version, "previous_version": previous,
            "kind": "rollback" if version < previous else "roll forward"})
    return events.DeploymentActivated(version=version, previous_version=previous, activated_by=actor.name,
                                      database_url=events.database_url(db))


def deploy_erasure(db: Session, erasure_id: str, actor: Actor, *, gate: GatePolicy | None = None,
                   force: bool = False) -> Deployment:
    """A new version = the active set + this erasure, at equal weights; activated, in one transaction,
    serialised with every other deploy, retire and activation (none builds on a set another is replacing).
    The `gate` judges the new version as served (`gate_check`)."""
    serialize_writes(db)
    current = _active_ids(db)
    if erasure_id in current:
        raise DeploymentConflict(f"erasure {erasure_id} is already in the active deployment", "id", "path")
    deployment = _create(db, [*current, erasure_id], actor=actor, reason=f"deploy {erasure_id}", field="id")
    record(db, actor, "erasure.deploy", erasure_id, {"version": deployment.version})
    activated = _activate(db, deployment.version, actor, gate=gate, force=force)
    db.commit()
    events.publish(activated)
    return deployment


def retire_erasure(db: Session, erasure_id: str, actor: Actor, *, gate: GatePolicy | None = None,
                   force: bool = False) -> Deployment:
    """A new version = the active set - this erasure (empty: serves the base model); activated, in one
    transaction, serialised like deploy_erasure, and judged like it."""
    serialize_writes(db)
    current = _active_ids(db)
    if erasure_id not in current:
        raise DeploymentConflict(f"erasure {erasure_id} is not in the active deployment", "id", "path")
    deployment = _create(db, [i for i in current if i != erasure_id], actor=actor, reason=f"retire {erasure_id}")
    record(db, actor, "erasure.retire", erasure_id, {"version": deployment.version})
    activated = _activate(db, deployment.version, actor, gate=gate, force=force)
    db.commit()
    events.publish(activated)
    return deployment


def _active_ids(db: Session) -> list[str]:
    version = active_row(db, lock=True).version
    return [e["erasure_id"] for e in get(db, version).entries] if version is not None else []


def changes(db: Session, from_version: int, to_version: int) -> dict[str, list[dict[str, Any]]]:
    """What serving `to_version` instead of `from_version` changes: erasures added, removed, reweighted."""
    def entries(version: int) -> dict[str, dict[str, Any]]:
        return {e["erasure_id"]: e for e in get(db, version).entries} if version != BASE_VERSION else {}

    old, new = entries(from_version), entries(to_version)
    return {
        "added": [e for i, e in new.items() if i not in old],
        "removed": [e for i, e in old.items() if i not in new],
        "reweighted": [{**e, "previous_weight": old[i]["weight"]} for i, e in new.items()
                       if i in old and abs(old[i]["weight"] - e["weight"]) > 1e-9],
    }
