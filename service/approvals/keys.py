"""Keys under four-eyes: with approvals on, a new admin key is made pending and works only once a second admin
approves it (one admin cannot give themselves a colleague); revoking a key cancels the requests it made."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from service.approvals.contract import ApprovalAction, ApprovalStatus
from service.approvals.models import ApprovalRequest
from service.approvals.service import add_request
from service.audit.service import Actor, record
from service.core.db import serialize_writes
from service.core.settings import Settings
from service.keys import service as keys
from service.keys.contract import Role
from service.keys.models import ApiKey


def create_key_or_request(db: Session, name: str, role: Role | str, actor: Actor,
                          settings: Settings) -> tuple[ApiKey, str, ApprovalRequest | None]:
    """A new key and its secret (shown once, now, to its maker); with approvals on, an admin key comes back
    pending with the request a different admin must approve before the key works."""
    if not (settings.deploy_approvals and Role(role) == Role.ADMIN):
        return (*keys.create_key(db, name, role, actor), None)
    serialize_writes(db)
    key, secret = keys.add_key(db, name, role, actor, pending_approval=True)
    key_id = key.id
    request = add_request(db, ApprovalAction.CREATE_KEY, actor, actor, key_id=key_id,
                          reason=f"new admin key {name!r}")  # commits the key with it
    return keys.get_key(db, key_id), secret, request


def revoke_key(db: Session, key_id: str, actor: Actor) -> ApiKey:
    """Revoke the key and cancel, in the same transaction, every pending request it made or that admits it
    (committed, each cancellation audited)."""
    key = keys.mark_revoked(db, key_id, actor)  # serialised
    pending = db.scalars(select(ApprovalRequest).where(
        ApprovalRequest.status == ApprovalStatus.PENDING,
        or_(ApprovalRequest.requested_key_id == key_id, ApprovalRequest.key_id == key_id)).with_for_update())
    for request in pending:
        request.status = ApprovalStatus.CANCELLED
        record(db, actor, "approval.cancel", request.id,
               {"action": request.action, "target": request.target, "why": f"key {key_id} revoked"})
    db.commit()
    return key
