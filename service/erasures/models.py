"""Database tables: erasure jobs, their event log, idempotency keys, deployments of erasures, API keys
and the audit log.

The schema is made by the Alembic migrations in migrations/versions, never by create_all.
"""

from __future__ import annotations

import enum
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names, so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class EventKind(enum.StrEnum):
    STATE = "state"
    METRICS = "metrics"
    ERROR = "error"
    INFO = "info"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_job_id() -> str:
    """`er_` + 12 hex digits of milliseconds + 20 random: ids sort by creation time."""
    return f"er_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive values)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# SQLite only auto-increments a column typed exactly INTEGER.
EventId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class ErasureJob(Base):
    __tablename__ = "erasure_job"
    __table_args__ = (CheckConstraint(f"status IN ({', '.join(repr(s.value) for s in JobStatus)})",
                                      name="status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_job_id)
    status: Mapped[str] = mapped_column(String(16), index=True, default=JobStatus.QUEUED)
    concept: Mapped[str] = mapped_column(String(200), index=True)
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
    # After training: the probe's before/after report (zerase.evaluation) and a before/after grid (PNG).
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


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything, keys and the audit log included
    MODERATOR = "moderator"  # erasures and deployments
    GENERATOR = "generator"  # /generate only


class ApiKey(Base):
    """A bearer key: only the sha256 of the secret is kept (the secret is 256 random bits, so a fast
    hash is as good as a slow one); the secret is shown once, when the key is made."""

    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint(f"role IN ({', '.join(repr(r.value) for r in Role)})", name="role"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))  # the secret's first characters, to recognise it by
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


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
