"""Tables of the erasures domain: jobs, their event log and the Idempotency-Key replays."""

from __future__ import annotations

import secrets
import time
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, ForeignKey, Integer, String, Text, false, text
from sqlalchemy.orm import Mapped, mapped_column

from service.core.tables import Base, EventId, UTCDateTime, check_in, utcnow
from service.erasures.contract import MAX_TEXT, JobStatus


def new_job_id() -> str:
    """`er_` + 12 hex digits of milliseconds + 20 random: ids sort by creation time."""
    return f"er_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


class ErasureJob(Base):
    __tablename__ = "erasure_job"
    __table_args__ = (CheckConstraint(check_in("status", JobStatus), name="status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_job_id)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    concept: Mapped[str] = mapped_column(String(MAX_TEXT), index=True)
    category: Mapped[str] = mapped_column(String(32), index=True)
    config: Mapped[dict[str, Any]] = mapped_column(JSON)  # the resolved EraseConfig
    reason: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the latest step's metrics
    worker: Mapped[str | None] = mapped_column(String(200))
    artifact_uri: Mapped[str | None] = mapped_column(String(1024))
    artifact_sha256: Mapped[str | None] = mapped_column(String(64))
    artifact_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # On success the worker deploys it: a new deployment of the active set + this job, activated.
    auto_deploy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # Higher runs first (0: normal; only admins set it); the key that asked, for per-key quotas.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"), index=True)
    requested_key_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # "immediate": a prompt guard serves the takedown while it trains (service/deployments/guard.py); None: none.
    mitigate: Mapped[str | None] = mapped_column(String(16))
    # What became of it: {"stage": "guarded" | "refused" | "retired", "version", "calibration", "detail"?}.
    mitigation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # After training: the probe's before/after report (zerase.evaluate.evaluation) and a before/after grid (PNG).
    evaluation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    preview_uri: Mapped[str | None] = mapped_column(String(1024))
    preview_sha256: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    enqueued_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the broker accepted "run it"
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    cancel_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobEvent(Base):
    __tablename__ = "job_event"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("erasure_job.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_key"

    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_sha256: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(ForeignKey("erasure_job.id", ondelete="CASCADE"))
    response: Mapped[dict[str, Any]] = mapped_column(JSON)  # the first response's body, replayed as is
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
