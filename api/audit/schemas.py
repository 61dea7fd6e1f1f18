"""The audit HTTP contract: one audit line and the list of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from service.audit.models import AuditEvent


class AuditOut(BaseModel):
    id: int
    at: datetime
    actor: str
    key_id: str | None
    action: str
    target: str | None
    data: dict[str, Any] | None

    @classmethod
    def of(cls, event: AuditEvent) -> AuditOut:
        return cls(id=event.id, at=event.at, actor=event.actor, key_id=event.key_id, action=event.action,
                   target=event.target, data=event.data)


class AuditList(BaseModel):
    object: Literal["list"] = "list"
    data: list[AuditOut]
    has_more: bool
    next_cursor: str | None
