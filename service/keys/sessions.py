"""Console sessions: signing in with an API key makes a server-side session the browser names by a
random token (an HttpOnly cookie); every page and form is then checked against the key behind it, so
a revoked key or an expired session signs the browser out at its next request.

Only the token's sha256 is stored, as for keys. Each session has its own CSRF token, which every form
carries back.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from service.audit.service import Actor, record
from service.core.tables import utcnow
from service.keys.models import ApiKey, ConsoleSession
from service.keys.service import authenticate


@dataclass(frozen=True)
class SignedIn:
    actor: Actor
    csrf_token: str
    token_sha256: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def sign_in(db: Session, secret: str, ttl_s: float) -> tuple[str, SignedIn] | None:
    """A new session for the key with this secret: (the cookie's token, the session), or None for an
    unknown or revoked key. Committed and audited."""
    key = authenticate(db, secret)
    if key is None:
        return None
    token = secrets.token_urlsafe(32)
    row = ConsoleSession(token_sha256=_digest(token), key_id=key.id, csrf_token=secrets.token_urlsafe(32),
                         expires_at=utcnow() + timedelta(seconds=ttl_s))
    db.add(row)
    actor = Actor(key.name, key.id, key.role)
    record(db, actor, "console.sign_in", key.id)
    # Expired sessions go when anyone signs in: no sweeper needed for a table this small.
    db.execute(delete(ConsoleSession).where(ConsoleSession.expires_at < utcnow()))
    db.commit()
    return token, SignedIn(actor, row.csrf_token, row.token_sha256)


def current(db: Session, token: str | None) -> SignedIn | None:
    """The live session this cookie names, or None (none, expired, or its key revoked)."""
    if not token:
        return None
    found = db.execute(select(ConsoleSession, ApiKey).join(ApiKey, ApiKey.id == ConsoleSession.key_id)
                       .where(ConsoleSession.token_sha256 == _digest(token))).first()
    db.commit()  # ends the read transaction: a page that then waits (for the model) holds no connection
    if found is None:
        return None
    row, key = found
    if row.expires_at < utcnow() or key.revoked_at is not None:
        return None
    return SignedIn(Actor(key.name, key.id, key.role), row.csrf_token, row.token_sha256)


def sign_out(db: Session, session: SignedIn) -> None:
    db.execute(delete(ConsoleSession).where(ConsoleSession.token_sha256 == session.token_sha256))
    record(db, session.actor, "console.sign_out", session.actor.key_id)
    db.commit()


def set_flash(db: Session, session: SignedIn, message: str) -> None:
    row = db.get(ConsoleSession, session.token_sha256)
    if row is not None:
        row.flash = message
        db.commit()


def pop_flash(db: Session, session: SignedIn) -> str | None:
    row = db.get(ConsoleSession, session.token_sha256)
    if row is None or row.flash is None:
        return None
    message, row.flash = row.flash, None
    db.commit()
    return message
