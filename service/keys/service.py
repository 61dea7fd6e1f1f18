"""API keys: a role each, the secret shown once and stored only as its sha256, revocable.

Secrets are `zk_` + 256 random bits, so a fast hash cannot be brute-forced and a lookup by hash is
one indexed read per request.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.audit.service import Actor, record
from service.core.db import serialize_writes, session_factory
from service.core.errors import Conflict, NotFound
from service.core.tables import utcnow
from service.keys.contract import SECRET_PREFIX, Role
from service.keys.models import ApiKey

# last_used_at is written at most this often per key: a write on every request would cost more than
# the request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class KeyNotFound(NotFound):
    code = "key_not_found"

    def __init__(self, key_id: str) -> None:
        super().__init__(f"no API key with id {key_id}", "id", "path")


class KeyConflict(Conflict):
    """Already revoked, or the last live admin key."""


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(db: Session, name: str, role: Role | str, actor: Actor) -> tuple[ApiKey, str]:
    """A new key (committed, audited) and its secret, which is not stored anywhere."""
    key, secret = add_key(db, name, role, actor)
    db.commit()
    return key, secret


def add_key(db: Session, name: str, role: Role | str, actor: Actor, *,
            pending_approval: bool = False) -> tuple[ApiKey, str]:
    """`create_key` without the commit; a `pending_approval` key is refused until `admit` (four-eyes)."""
    role = Role(role)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey(id=f"key_{secrets.token_hex(8)}", name=name, role=role, prefix=secret[:10],
                 secret_sha256=_digest(secret), created_by=actor.name, created_by_key_id=actor.key_id,
                 pending_approval=pending_approval)
    db.add(key)
    db.flush()
    record(db, actor, "key.create", key.id, {"name": name, "role": role.value, "pending_approval": pending_approval})
    return key, secret


def get_key(db: Session, key_id: str) -> ApiKey:
    key = db.get(ApiKey, key_id)
    if key is None:
        raise KeyNotFound(key_id)
    return key


def admit(db: Session, key_id: str, actor: Actor) -> ApiKey:
    """A pending admin key works from now on (not committed; audited)."""
    key = get_key(db, key_id)
    if key.revoked_at is not None or not key.pending_approval:
        raise KeyConflict(f"API key {key_id} is {'revoked' if key.revoked_at else 'not waiting for approval'}")
    key.pending_approval = False
    record(db, actor, "key.admit", key.id, {"name": key.name, "role": key.role})
    return key


def makers(db: Session, key: ApiKey) -> list[ApiKey]:
    """The keys that made `key`, nearest first, back to one made on the command line: who it descends from."""
    chain: list[ApiKey] = []
    maker_id = key.created_by_key_id
    while maker_id is not None and maker_id not in {k.id for k in chain} and len(chain) < 1000:
        maker = db.get(ApiKey, maker_id)
        if maker is None:
            break
        chain.append(maker)
        maker_id = maker.created_by_key_id
    return chain


def issue_key(database_url: str, name: str, role: Role | str, actor: Actor) -> tuple[ApiKey, str]:
    """`create_key` in a session of its own: for the command line, the demo and scripts."""
    with session_factory(database_url)() as db:
        return create_key(db, name, role, actor)


def authenticate(db: Session, secret: str) -> ApiKey | None:
    """The live key with this secret, or None (unknown or revoked)."""
    if not secret.startswith(SECRET_PREFIX):
        return None
    key = db.scalar(select(ApiKey).where(ApiKey.secret_sha256 == _digest(secret)))
    if key is None or key.revoked_at is not None or key.pending_approval:
        db.rollback()
        return None
    now = utcnow()
    if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
        db.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    # Ends the transaction either way: its connection goes back to the pool, so a request that waits
    # (for the model, say) after authenticating holds none.
    db.commit()
    return key


def list_keys(db: Session) -> list[ApiKey]:
    return list(db.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))


def revoke(db: Session, key_id: str, actor: Actor) -> ApiKey:
    """Revoke a key (committed). The last live admin key cannot be revoked: nobody could make keys.

    Serialised against every other revocation (the live admin set is locked), so two admins revoking
    each other at once leave one of them. The approvals domain's `revoke_key` also cancels the key's requests."""
    key = mark_revoked(db, key_id, actor)
    db.commit()
    return key


def mark_revoked(db: Session, key_id: str, actor: Actor) -> ApiKey:
    """`revoke` without the commit."""
    serialize_writes(db)
    key = get_key(db, key_id)
    if key.role == Role.ADMIN:
        # The whole live admin set, locked in id order (so two revocations cannot deadlock), then re-read.
        live_admins = db.scalars(select(ApiKey.id).where(ApiKey.role == Role.ADMIN, ApiKey.revoked_at.is_(None),
                                                         ApiKey.pending_approval.is_(False))
                                 .order_by(ApiKey.id).with_for_update()).all()
        db.refresh(key)
        if key.revoked_at is None and not key.pending_approval and len(live_admins) <= 1:
            raise KeyConflict("this is the last live admin key; create another admin key first")
    else:
        db.refresh(key, with_for_update=True)
    if key.revoked_at is not None:
        raise KeyConflict(f"API key {key_id} is already revoked")
    key.revoked_at = utcnow()
    record(db, actor, "key.revoke", key.id, {"name": key.name, "role": key.role})
    return key
