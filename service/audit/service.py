"""The audit log: every moderation action (submit, cancel, retry, deploy, activate, key changes) with
who did it, through which key, and when.

Service functions record their action in the same transaction as the change itself, so an action
is never committed without its audit line, nor the line without the action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.audit.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """Who acts: an API key's name and id, or a named part of the system (CLI, auto-deploy)."""

    name: str
    key_id: str | None = None
    role: str | None = None


def record(db: Session, actor: Actor, action: str, target: str | None = None,
           data: dict[str, Any] | None = None) -> None:
    """Add one audit line to the session; it commits with the action it describes."""
    db.add(AuditEvent(actor=actor.name, key_id=actor.key_id, action=action, target=target, data=data))


def list_events(db: Session, *, limit: int, cursor: int | None = None, action: str | None = None,
                actor: str | None = None, target: str | None = None) -> tuple[list[AuditEvent], bool]:
    """Newest first; `cursor` is the last id of the previous page. Returns (page, has_more)."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit + 1)
    if cursor is not None:
        query = query.where(AuditEvent.id < cursor)
    if action:
        query = query.where(AuditEvent.action == action)
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if target:
        query = query.where(AuditEvent.target == target)
    rows = list(db.scalars(query))
    return rows[:limit], len(rows) > limit
