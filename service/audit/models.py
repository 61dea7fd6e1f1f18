"""The audit domain's table: one row per moderation action."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from service.core.tables import Base, EventId, UTCDateTime, utcnow


class AuditEvent(Base):
    """One moderation action: who (key name and id), what (action, target, details), when."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))
    key_id: Mapped[str | None] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str | None] = mapped_column(String(200), index=True)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
