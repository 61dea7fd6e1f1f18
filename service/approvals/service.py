"""Four-eyes approval (ZERASE_DEPLOY_APPROVALS=1): a deploy, retire or activation by one key (and a new admin key,
`service.approvals.keys`) becomes a pending request that a different person's moderator or admin key approves or
rejects.

The `*_or_request` functions are the one entry point of the API, the console and auto-deploy: with approvals off
they act at once, as the deployments service does. An approved action runs when it is approved, as the approver,
through that service (the deploy gate judges the version as served again then); if it is refused, the request is
`failed` with the reason. Every step is audited. Who counts as a different person: `service.approvals.distinct`.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.approvals.contract import ApprovalAction, ApprovalStatus
from service.approvals.distinct import not_distinct
from service.approvals.models import ApprovalRequest
from service.audit.service import Actor, record
from service.core import events
from service.core.db import serialize_writes
from service.core.errors import Conflict, DomainError, Forbidden, NotFound
from service.core.settings import Settings
from service.core.tables import utcnow
from service.deployments import service as deployments
from service.deployments.contract import BASE_VERSION
from service.deployments.gate import GatePolicy, GateRefused
from service.deployments.judging import UNEVALUATED, gate_misses
from service.deployments.models import Deployment
from service.erasures.contract import JobStatus
from service.erasures.errors import JobNotFound
from service.erasures.models import ErasureJob
from service.keys import service as keys
from service.keys.contract import Role
from service.keys.models import ApiKey

DECIDERS = (Role.ADMIN, Role.MODERATOR)


class ApprovalNotFound(NotFound):
    code = "approval_not_found"

    def __init__(self, approval_id: str) -> None:
        super().__init__(f"no approval request with id {approval_id}", "id", "path")


class ApprovalConflict(Conflict):
    """Already decided, or the same change already waits for approval."""

    code = "approval_conflict"


class OwnRequest(Forbidden):
    code = "own_request"


def deploy_or_request(db: Session, erasure_id: str, actor: Actor, settings: Settings, force: bool = False, *,
                      reason: str | None = None, requester: Actor | None = None) -> Deployment | ApprovalRequest:
    """Deploy the erasure (the active set + it, activated), or, with approvals on, request that (pending).
    `requester`: on whose behalf `actor` asks (auto-deploy: the job's key), who then may not approve it."""
    if not settings.deploy_approvals:
        return deployments.deploy_erasure(db, erasure_id, actor, gate=GatePolicy.of(settings), force=force,
                                          fusion=settings.fusion)
    return _request(db, ApprovalAction.DEPLOY, actor, settings, erasure_id=erasure_id, force=force, reason=reason,
                    requester=requester)


def retire_or_request(db: Session, erasure_id: str, actor: Actor, settings: Settings, *, force: bool = False,
                      reason: str | None = None) -> Deployment | ApprovalRequest:
    """Retire the erasure (the active set - it, activated), or, with approvals on, request that (pending)."""
    if not settings.deploy_approvals:
        return deployments.retire_erasure(db, erasure_id, actor, gate=GatePolicy.of(settings), force=force,
                                          fusion=settings.fusion)
    return _request(db, ApprovalAction.RETIRE, actor, settings, erasure_id=erasure_id, force=force, reason=reason)


def activate_or_request(db: Session, version: int, actor: Actor, settings: Settings, *, force: bool = False,
                        reason: str | None = None) -> Deployment | ApprovalRequest | None:
    """Serve `version` (None back: the base model, 0), or, with approvals on, request that (pending)."""
    if not settings.deploy_approvals:
        return deployments.activate(db, version, actor, gate=GatePolicy.of(settings), force=force)
    return _request(db, ApprovalAction.ACTIVATE, actor, settings, version=version, force=force, reason=reason)


def approve(db: Session, approval_id: str, actor: Actor, settings: Settings,
            comment: str | None = None) -> ApprovalRequest:
    """Approve a pending request and run its action as `actor` (committed). The request comes back `approved`
    with the version it made or activated, or `failed` with why the action was refused."""
    serialize_writes(db)
    request = _decidable(db, approval_id, actor)
    if request.force and actor.role != Role.ADMIN:
        raise Forbidden(f"{request.id} deploys past the deploy gate (force); only an admin key may approve it",
                        "Authorization", "header")
    if request.action == ApprovalAction.CREATE_KEY and actor.role != Role.ADMIN:
        raise Forbidden(f"{request.id} admits a new admin key; only an admin key may approve it",
                        "Authorization", "header")
    claimed_at = _decide(db, request, actor, ApprovalStatus.APPROVED, comment)
    try:
        # The decision commits with the action. SQLite: it commits when the action takes the write lock, before
        # the action runs; either way a second approver, waiting on the lock, finds the request decided.
        made = _act(db, request, actor, settings)
    except DomainError as exc:
        db.rollback()
        return _fail(db, approval_id, actor, comment, claimed_at, exc)
    # Known once the action has committed: a transaction of its own.
    if request.action != ApprovalAction.CREATE_KEY:
        request.deployment_version = made.version if made is not None else BASE_VERSION
    db.commit()
    return request


def reject(db: Session, approval_id: str, actor: Actor, comment: str | None = None) -> ApprovalRequest:
    """Reject a pending request (committed); nothing else changes."""
    serialize_writes(db)
    request = _decidable(db, approval_id, actor)
    _decide(db, request, actor, ApprovalStatus.REJECTED, comment)
    if request.key_id is not None:  # a refused admin key never works
        keys.mark_revoked(db, request.key_id, actor)
    db.commit()
    return request


def get_request(db: Session, approval_id: str) -> ApprovalRequest:
    request = db.get(ApprovalRequest, approval_id)
    if request is None:
        raise ApprovalNotFound(approval_id)
    return request


def list_requests(db: Session, status: ApprovalStatus | str | None = None, limit: int = 100) -> list[ApprovalRequest]:
    """Newest first."""
    query = select(ApprovalRequest).order_by(ApprovalRequest.created_at.desc(), ApprovalRequest.id.desc()).limit(limit)
    if status is not None:
        query = query.where(ApprovalRequest.status == ApprovalStatus(status))
    return list(db.scalars(query))


def _request(db: Session, action: ApprovalAction, actor: Actor, settings: Settings, *, erasure_id: str | None = None,
             version: int | None = None, force: bool = False, reason: str | None = None,
             requester: Actor | None = None) -> ApprovalRequest:
    """A pending request (committed, audited, then announced), if the change could be made now."""
    if actor.role not in (*DECIDERS, None):  # None: a named part of the system (auto-deploy)
        raise Forbidden(f"the key {actor.name!r} has role {actor.role}; deployments need a moderator or admin key",
                        "Authorization", "header")
    if force and actor.role != Role.ADMIN:
        raise Forbidden(f"only admin keys may force a deployment past the gate; {actor.name!r} is a "
                        f"{actor.role or 'system actor'}", "force")
    requester = requester or actor
    serialize_writes(db)
    field = "version" if action == ApprovalAction.ACTIVATE else "id"
    _check(db, action, erasure_id, version, None if force else GatePolicy.of(settings))
    waiting = db.scalar(select(ApprovalRequest.id).where(
        ApprovalRequest.status == ApprovalStatus.PENDING, ApprovalRequest.action == action,
        ApprovalRequest.erasure_id == erasure_id, ApprovalRequest.version == version))
    if waiting is not None:
        raise ApprovalConflict(f"{waiting} already asks to {action} this; approve or reject it first", field, "path")
    return add_request(db, action, actor, requester, erasure_id=erasure_id, version=version, force=force,
                       reason=reason)


def add_request(db: Session, action: ApprovalAction, actor: Actor, requester: Actor, *, erasure_id: str | None = None,
                version: int | None = None, key_id: str | None = None, force: bool = False,
                reason: str | None = None) -> ApprovalRequest:
    """Add the pending request, audited, commit, then announce it (the caller has checked and serialised)."""
    request = ApprovalRequest(action=action, erasure_id=erasure_id, version=version, key_id=key_id, force=force,
                              reason=reason, requested_by=requester.name, requested_key_id=requester.key_id)
    db.add(request)
    db.flush()
    record(db, actor, "approval.request", request.id,
           {"action": action.value, "target": request.target, "force": force, "reason": reason,
            "requested_by": requester.name, "requested_key_id": requester.key_id})
    db.commit()
    events.publish(events.ApprovalRequested(approval_id=request.id, action=action.value, target=request.target,
                                            requested_by=request.requested_by, database_url=events.database_url(db)))
    return request


def _check(db: Session, action: ApprovalAction, erasure_id: str | None, version: int | None,
           gate: GatePolicy | None) -> None:
    """Refuse, as the deployments service would, a change that could not be made now: the same gate check of the
    version as it would be served. Locks the active row, so requests are serialised with each other and with every
    deploy."""
    active_version = deployments.active_row(db, lock=True).version or BASE_VERSION
    active = deployments.served_entries(db, active_version)
    judged = None  # the version as it exists, with its own evaluation (activate)
    if action == ApprovalAction.ACTIVATE:
        assert version is not None
        served = deployments.served_entries(db, version)  # 404 naming the version
        judged = deployments.get(db, version) if version != BASE_VERSION else None
    elif action == ApprovalAction.RETIRE:
        if erasure_id not in [e["erasure_id"] for e in active]:
            raise deployments.DeploymentConflict(f"erasure {erasure_id} is not in the active deployment", "id", "path")
        kept = [e for e in active if e["erasure_id"] != erasure_id]
        served = [{**e, "weight": 1.0 / len(kept)} for e in kept]  # as deployments.retire_erasure weighs them
    else:
        assert erasure_id is not None
        job = db.get(ErasureJob, erasure_id)
        if job is None:
            raise JobNotFound(erasure_id)
        if job.status != JobStatus.SUCCEEDED or not (job.artifact_uri and job.artifact_sha256):
            raise deployments.DeploymentConflict(f"erasure {erasure_id} is {job.status}; only succeeded erasures "
                                                 "can be deployed", "id", "path")
        if erasure_id in [e["erasure_id"] for e in active]:
            raise deployments.DeploymentConflict(f"erasure {erasure_id} is already in the active deployment", "id",
                                                 "path")
        served = [{**e, "weight": 1.0 / (len(active) + 1)} for e in [*active, {"erasure_id": erasure_id}]]
    # A set not yet judged as served may be asked for: approving it queues its evaluation (judging.py).
    missed = [m for m in gate_misses(db, served, gate, judged) if m.value != UNEVALUATED]
    if missed:
        raise GateRefused(missed)


def _act(db: Session, request: ApprovalRequest, actor: Actor, settings: Settings) -> Deployment | None:
    """Run the request's action through the deployments service (which commits) or admit the key."""
    gate = GatePolicy.of(settings)
    if request.action == ApprovalAction.CREATE_KEY:
        assert request.key_id is not None
        keys.admit(db, request.key_id, actor)
        db.commit()
        return None
    if request.action == ApprovalAction.ACTIVATE:
        assert request.version is not None
        return deployments.activate(db, request.version, actor, gate=gate, force=request.force)
    assert request.erasure_id is not None
    if request.action == ApprovalAction.DEPLOY:
        return deployments.deploy_erasure(db, request.erasure_id, actor, gate=gate, force=request.force,
                                          fusion=settings.fusion)
    return deployments.retire_erasure(db, request.erasure_id, actor, gate=gate, force=request.force,
                                      fusion=settings.fusion)


def _locked(db: Session, approval_id: str) -> ApprovalRequest:
    # FOR UPDATE (PostgreSQL): of two deciders at once, the second waits here and then finds it decided.
    request = db.get(ApprovalRequest, approval_id, with_for_update=True, populate_existing=True)
    if request is None:
        raise ApprovalNotFound(approval_id)
    return request


def _decidable(db: Session, approval_id: str, actor: Actor) -> ApprovalRequest:
    """The pending request, locked, if `actor` may decide it: a moderator or admin key of another person."""
    if actor.role not in DECIDERS:
        raise Forbidden(f"{actor.name!r} ({actor.role or 'system actor'}) may not decide approval requests; this "
                        "needs a moderator or admin key", "Authorization", "header")
    request = _locked(db, approval_id)
    why = not_distinct(db, actor, request)
    if why is not None:
        raise OwnRequest(f"{request.id} was requested by {request.requested_by!r} and {why}; a different person's "
                         "key must approve or reject it", "Authorization", "header")
    if request.status != ApprovalStatus.PENDING:
        raise ApprovalConflict(f"{request.id} is already {request.status} (by {request.decided_by})", "id", "path")
    requester = db.get(ApiKey, request.requested_key_id) if request.requested_key_id else None
    if requester is not None and requester.revoked_at is not None:  # revoke_key cancels these; in case it did not
        raise ApprovalConflict(f"{request.id} was requested by a key that is revoked since", "id", "path")
    return request


def _decide(db: Session, request: ApprovalRequest, actor: Actor, status: ApprovalStatus,
            comment: str | None) -> datetime:
    """Record the decision on the request and in the audit log (not committed); when it was made."""
    request.status, request.comment = status, comment
    request.decided_by, request.decided_key_id, request.decided_at = actor.name, actor.key_id, utcnow()
    verb = "approve" if status in (ApprovalStatus.APPROVED, ApprovalStatus.FAILED) else "reject"
    record(db, actor, f"approval.{verb}", request.id,
           {"action": request.action, "target": request.target, "requested_by": request.requested_by,
            "comment": comment})
    return request.decided_at


def _fail(db: Session, approval_id: str, actor: Actor, comment: str | None, claimed_at: datetime,
          exc: DomainError) -> ApprovalRequest:
    """The approved action was refused: the request is decided, `failed`, with the refusal (committed)."""
    serialize_writes(db)
    request = _locked(db, approval_id)
    # PostgreSQL rolled the decision back with the action; SQLite had committed it before the action ran.
    committed = request.status == ApprovalStatus.APPROVED and request.decided_at == claimed_at
    if request.status != ApprovalStatus.PENDING and not committed:
        raise ApprovalConflict(f"{request.id} was decided meanwhile: {request.status} by {request.decided_by}",
                               "id", "path")
    if committed:
        request.status = ApprovalStatus.FAILED
    else:
        _decide(db, request, actor, ApprovalStatus.FAILED, comment)
    request.failure = {"code": exc.code, "detail": str(exc), "field": exc.field, **getattr(exc, "extra", {})}
    record(db, actor, "approval.fail", request.id, {"action": request.action, "target": request.target,
                                                     "failure": request.failure})
    db.commit()
    return request
