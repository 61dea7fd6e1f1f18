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
    # [{erasure_id, concept, category, weight, sha256, uri}]: copied from the jobs, so a deployment never changes
    # (category: since 2026-12-06; the router reads each erasure as its request's category, an older entry as the
    # default one, in its evaluation and in every generation process alike).
    entries: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_by: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The set judged as served (zerase.evaluate.served_evaluation), by a worker: queued, running, evaluated or failed;
    # None when nobody asked (a single erasure at weight 1 is judged by its own job's evaluation).
    evaluation_status: Mapped[str | None] = mapped_column(String(16), index=True)
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    evaluation_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An activation that waits for the evaluation: {kind, actor, key_id, role, based_on}; the worker settles it.
    pending_activation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Why the waiting activation did not happen: {code, detail, gate?}.
    refusal: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # How several erasures are served (ZERASE_FUSION when the version was made): None or "average" (the stack at
    # `weight` each), or one of contract.FUSED (one patch made by a worker: `fused` = {uri, sha256, rank, method}).
    fusion: Mapped[str | None] = mapped_column(String(16))
    fused: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The prompt guard served with the set (service/deployments/guard.py): [{erasure_id, concept, category,
    # anchor, threshold, calibration}], each a takedown whose erasure is not served yet. None or []: no guard.
    guard: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class ActiveDeployment(Base):
    """The one row that says which deployment generation serves (version NULL: the base model)."""

    __tablename__ = "active_deployment"
    __table_args__ = (CheckConstraint("id = 1", name="singleton"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, default=1)
    version: Mapped[int | None] = mapped_column(ForeignKey("deployment.version"))
    activated_by: Mapped[str | None] = mapped_column(String(200))
    activated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
