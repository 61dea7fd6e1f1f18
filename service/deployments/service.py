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
from service.core.errors import Conflict, Invalid, NotFound
from service.core.tables import utcnow
from service.deployments.contract import BASE_VERSION, FUSED, MAX_WEIGHT
from service.deployments.gate import GatePolicy, Miss
from service.deployments.judging import EvaluationStatus, Verdict, gate_check, gate_misses
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
           reason: str | None = None, gate: GatePolicy | None = None, force: bool = False,
           fusion: str | None = None) -> Deployment:
    """A new version serving `erasure_ids` (weights default to 1/N, Appendix F); not activated; committed.
    With a `gate`, the version must pass it (`gate_check`), unless an admin forces it; activating it is judged
    again."""
    serialize_writes(db)
    deployment = _create(db, erasure_ids, weights, actor=actor, reason=reason, gate=gate, force=force,
                         fusion=None if weights is not None else fusion)  # explicit weights: served as given
    db.commit()
    return deployment


def _create(db: Session, erasure_ids: Sequence[str], weights: Sequence[float] | None = None, *, actor: Actor,
            reason: str | None = None, field: str = "erasure_ids", gate: GatePolicy | None = None,
            force: bool = False, fusion: str | None = None) -> Deployment:
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
        entries.append({"erasure_id": job.id, "concept": job.concept, "category": job.category, "weight": weight,
                        "sha256": job.artifact_sha256, "uri": job.artifact_uri})
    verdict = gate_check(db, entries, actor, gate, force)
    guard, retired = carried_guard(db, [e["erasure_id"] for e in entries])
    if retired:  # the trained patch takes the guard entry's place (the version's reason says so)
        reason = f"{reason or ''}; guard retired for {', '.join(retired)}".lstrip("; ")
    fused = _job_served_patch(db, entries, fusion)
    if len(entries) == 1 and fused is None:
        fusion = None  # its job judged the raw LoRA (no patch as served): it is served so
    deployment = Deployment(entries=entries, created_by=actor.name, reason=reason, fusion=fusion, fused=fused,
                            guard=guard or None)
    db.add(deployment)
    db.flush()
    if retired:
        record(db, actor, "guard.retire", f"deployment:{deployment.version}",
               {"erasure_ids": retired, "why": "deployed"})
    _audit_forced(db, actor, deployment.version, verdict.forced, "create")
    if verdict.waiting or _unfused(deployment):  # fused and judged before anyone activates it
        deployment.evaluation_status = EvaluationStatus.QUEUED
    record(db, actor, "deployment.create", f"deployment:{deployment.version}",
           {"erasure_ids": list(erasure_ids), "weights": [e["weight"] for e in entries], "reason": reason})
    return deployment


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
    (judging.gate_check: an admin may force it); committed. A set not yet judged as served is queued for its
    evaluation instead and activated by the worker if it passes (`pending_activation`)."""
    serialize_writes(db)
    activated = _activate(db, version, actor, gate=gate, force=force, kind="activate")
    db.commit()
    _publish(activated)
    return get(db, version) if version != BASE_VERSION else None


def _publish(activated: events.DeploymentActivated | None) -> None:
    if activated is not None:
        events.publish(activated)


def _activate(db: Session, version: int, actor: Actor, *, gate: GatePolicy | None, force: bool = False,
              kind: str, based_on: int | None = None) -> events.DeploymentActivated | None:
    """Judge the version and move the pointer, or queue its evaluation with this activation waiting on it (not
    committed); the event to publish once the caller has committed (None: waiting)."""
    deployment = get(db, version) if version != BASE_VERSION else None
    previous = active_row(db, lock=True).version or BASE_VERSION
    verdict: Verdict = gate_check(db, deployment.entries if deployment else [], actor, gate, force, deployment)
    if verdict.waiting or (deployment is not None and _unfused(deployment)):  # even forced: no patch to serve yet
        assert deployment is not None
        _wait_for_evaluation(db, deployment, actor, kind, previous if based_on is None else based_on, force)
        return None
    _audit_forced(db, actor, version, verdict.forced, "activate")
    _supersede_waiting(db, version, actor)
    return point_to(db, version, previous, actor, "rollback" if version < previous else "roll forward")


def point_to(db: Session, version: int, previous: int, actor: Actor, kind: str) -> events.DeploymentActivated:
    """Move the active pointer (the caller has judged the version and holds the active row's lock); the event to
    publish once committed."""
    db.execute(update(ActiveDeployment).where(ActiveDeployment.id == 1)
               .values(version=version if version != BASE_VERSION else None, activated_by=actor.name,
                       activated_at=utcnow()))
    record(db, actor, "deployment.activate", f"deployment:{version}",
           {"version": version, "previous_version": previous, "kind": kind})
    return events.DeploymentActivated(version=version, previous_version=previous, activated_by=actor.name,
                                      database_url=events.database_url(db))


def carried_guard(db: Session, served: Sequence[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The active version's guard entries a new version keeps (those whose erasure it does not serve), and the
    erasure ids whose entries it retires."""
    version = active_row(db).version
    guard = list(get(db, version).guard or []) if version is not None else []
    return [g for g in guard if g["erasure_id"] not in served], [g["erasure_id"] for g in guard
                                                                  if g["erasure_id"] in served]


def derive(db: Session, base: Deployment | None, guard: list[dict[str, Any]], actor: Actor,
           reason: str) -> Deployment:
    """A new version serving `base`'s erasures exactly as `base` does (its fused patch and its judgement as
    served: the patch does not change) with `guard` as its prompt guard; not activated, not committed."""
    deployment = Deployment(entries=list(base.entries) if base else [], created_by=actor.name, reason=reason,
                            guard=guard or None)
    if base is not None:
        deployment.fusion, deployment.fused = base.fusion, base.fused
        deployment.evaluation_status, deployment.evaluation = base.evaluation_status, base.evaluation
    db.add(deployment)
    db.flush()
    return deployment


def deploy_erasure(db: Session, erasure_id: str, actor: Actor, *, gate: GatePolicy | None = None,
                   force: bool = False, fusion: str | None = None) -> Deployment:
    """A new version = the active set + this erasure, at equal weights; activated, in one transaction,
    serialised with every other deploy, retire and activation (none builds on a set another is replacing).
    The `gate` judges the new version as served (judging.gate_check); a set that must first be evaluated as
    served comes back with `pending_activation`, activated by the worker if it passes and nothing else changed
    the active set meanwhile."""
    serialize_writes(db)
    based_on, current = _active_ids(db)
    if erasure_id in current:
        raise DeploymentConflict(f"erasure {erasure_id} is already in the active deployment", "id", "path")
    deployment = _create(db, [*current, erasure_id], actor=actor, reason=f"deploy {erasure_id}", field="id",
                         fusion=fusion)
    record(db, actor, "erasure.deploy", erasure_id, {"version": deployment.version})
    activated = _activate(db, deployment.version, actor, gate=gate, force=force, kind="deploy", based_on=based_on)
    db.commit()
    _publish(activated)
    return deployment


def retire_erasure(db: Session, erasure_id: str, actor: Actor, *, gate: GatePolicy | None = None,
                   force: bool = False, fusion: str | None = None) -> Deployment:
    """A new version = the active set - this erasure (empty: serves the base model); activated, in one
    transaction, serialised like deploy_erasure, and judged like it."""
    serialize_writes(db)
    based_on, current = _active_ids(db)
    if erasure_id not in current:
        raise DeploymentConflict(f"erasure {erasure_id} is not in the active deployment", "id", "path")
    deployment = _create(db, [i for i in current if i != erasure_id], actor=actor, reason=f"retire {erasure_id}",
                         fusion=fusion)
    record(db, actor, "erasure.retire", erasure_id, {"version": deployment.version})
    activated = _activate(db, deployment.version, actor, gate=gate, force=force, kind="retire", based_on=based_on)
    db.commit()
    _publish(activated)
    return deployment


def _erasures(db: Session, version: int) -> list[str]:
    return [e["erasure_id"] for e in served_entries(db, version)]


def _active_ids(db: Session) -> tuple[int, list[str]]:
    """(the active version, its erasures), the active row locked."""
    version = active_row(db, lock=True).version
    if version is None:
        return BASE_VERSION, []
    return version, [e["erasure_id"] for e in get(db, version).entries]


def _job_served_patch(db: Session, entries: list[dict[str, Any]], fusion: str | None) -> dict[str, Any] | None:
    """For one erasure at weight 1, the patch its job was judged on when it is this fusion's: the version serves
    exactly what the job's evaluation (and so the gate) judged, with nothing to make."""
    if fusion not in FUSED or len(entries) != 1 or abs(float(entries[0]["weight"]) - 1.0) > 1e-9:
        return None
    job = db.get(ErasureJob, entries[0]["erasure_id"])
    served = (job.evaluation or {}).get("served_patch") if job is not None else None
    return dict(served) if served and served.get("method") == fusion else None


def _unfused(deployment: Deployment) -> bool:
    """A version served as one fused patch that a worker has not made yet."""
    return deployment.fusion in FUSED and not deployment.fused


def _wait_for_evaluation(db: Session, deployment: Deployment, actor: Actor, kind: str, based_on: int,
                         force: bool = False) -> None:
    """Queue the version's evaluation as served (its fused patch first, where it has one), with this activation
    waiting on it (settled by `settle`; `force`: an admin's, past the gate)."""
    if deployment.evaluation_status not in (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING):
        deployment.evaluation_status, deployment.evaluation = EvaluationStatus.QUEUED, None
    deployment.pending_activation = {"kind": kind, "actor": actor.name, "key_id": actor.key_id,
                                     "role": actor.role, "based_on": based_on, "force": force}
    deployment.refusal = None
    record(db, actor, "deployment.evaluation_requested", f"deployment:{deployment.version}",
           {"kind": kind, "based_on": based_on})


def _supersede_waiting(db: Session, version: int, actor: Actor) -> None:
    """An activation now makes every activation still waiting for an evaluation moot: they end, refused."""
    for waiting in db.scalars(select(Deployment).where(Deployment.pending_activation.is_not(None),
                                                       Deployment.version != version)):
        waiting.pending_activation = None
        waiting.refusal = {"code": "superseded", "detail": f"version {version} was activated by {actor.name} "
                                                           "before this one was judged"}


def request_evaluation(db: Session, version: int, actor: Actor) -> Deployment:
    """Queue `version` to be judged as served (again); committed, audited."""
    serialize_writes(db)
    deployment = get(db, version)
    if deployment.evaluation_status not in (EvaluationStatus.QUEUED, EvaluationStatus.RUNNING):
        deployment.evaluation_status, deployment.evaluation = EvaluationStatus.QUEUED, None
        record(db, actor, "deployment.evaluation_requested", f"deployment:{version}", {"kind": "evaluate"})
    db.commit()
    return deployment


def settle(db: Session, version: int, gate: GatePolicy | None) -> Deployment:
    """After the version's evaluation: activate it if an activation waits and the gate now passes it (and, for a
    deploy or retire, the active set is still the one it was built on), else record why not; committed."""
    serialize_writes(db)
    deployment = db.get(Deployment, version, with_for_update=True, populate_existing=True)
    if deployment is None or not deployment.pending_activation:
        db.commit()
        return get(db, version)
    intent = dict(deployment.pending_activation)
    actor = Actor(intent["actor"], intent.get("key_id"), intent.get("role"))
    current = active_row(db, lock=True).version or BASE_VERSION
    forced = bool(intent.get("force"))
    missed = [] if forced else gate_misses(db, deployment.entries, gate, deployment)
    activated = None
    if _unfused(deployment):
        deployment.refusal = {"code": "fusion_failed", "detail": "the fused patch could not be made: "
                                                                 f"{(deployment.evaluation or {}).get('error')}"}
    elif intent["kind"] != "activate" and _erasures(db, current) != _erasures(db, intent["based_on"]):
        deployment.refusal = {"code": "conflict", "detail": f"the active version moved from {intent['based_on']} "
                                                            f"to {current} while this one was evaluated; ask again"}
    elif missed:
        deployment.refusal = {"code": "deploy_gate", "detail": "; ".join(m.describe() for m in missed),
                              "gate": [m.to_dict() for m in missed]}
    else:
        deployment.pending_activation = None
        guard, _ = carried_guard(db, [e["erasure_id"] for e in deployment.entries])
        if current != intent["based_on"] and guard != list(deployment.guard or []):
            # Only the guard moved meanwhile (a takedown guarded or ended): serve this set with today's guard.
            derived = derive(db, deployment, guard, actor, f"version {version} with the guard of version {current}")
            record(db, actor, "deployment.create", f"deployment:{derived.version}",
                   {"erasure_ids": [e["erasure_id"] for e in derived.entries], "derived_from": version})
            version = derived.version
        activated = _activate(db, version, actor, gate=gate, force=forced, kind=intent["kind"])
    deployment.pending_activation = None
    if deployment.refusal is not None:
        record(db, actor, "deployment.refused", f"deployment:{version}", deployment.refusal)
    db.commit()
    _publish(activated)
    return deployment


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
