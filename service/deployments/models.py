"""Tables of the deployments domain: immutable numbered sets of erasures, and which one is served."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.tables import Base, UTCDateTime, utcnow


class Deployment(Base):
    """An immutable set of erasures served together; versions ascend from 1 (0 means the base model)."""

    __tablename__ = "deployment"

    version: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # [{erasure_id, concept, weight, sha256, uri}]: copied from the jobs, so a deployment never changes.
    entries: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ActiveDeployment(Base):
    """The one row that says which deployment generation serves (version NULL: the base model)."""

    __tablename__ = "active_deployment"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version: Mapped[int | None] = mapped_column(ForeignKey("deployment.version"))
    activated_by: Mapped[str | None] = mapped_column(String(200))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
