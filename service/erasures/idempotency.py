"""Idempotency-Key replays, scoped to the API key that sent them and kept for a limited time (Stripe's
rules): another key's use of the same header value is a request of its own, and rows expire."""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from service.audit.service import Actor
from service.core.tables import utcnow
from service.erasures.models import IdempotencyKey


def scoped(actor: Actor, header: str) -> str:
    """The stored key: the header value within the acting API key (or actor, for keyless callers)."""
    owner = actor.key_id or f"actor:{actor.name}"
    return hashlib.sha256(f"{owner}\x00{header}".encode()).hexdigest()


def live(db: Session, key: str, ttl_s: float) -> IdempotencyKey | None:
    """The replay row for `key`, unless it has expired (then it is deleted with the caller's transaction)."""
    row = db.get(IdempotencyKey, key)
    if row is not None and row.created_at < utcnow() - timedelta(seconds=ttl_s):
        db.delete(row)
        db.flush()
        return None
    return row


def purge_expired(db: Session, ttl_s: float) -> int:
    """Delete every expired row (the sweeper calls this); returns how many."""
    result = db.execute(delete(IdempotencyKey).where(IdempotencyKey.created_at < utcnow() - timedelta(seconds=ttl_s)))
    db.commit()
    return int(result.rowcount)  # type: ignore[attr-defined]
