"""The job service as the API uses it: submit (with presets and idempotency), read, list, cancel,
retry, events. The worker side of a job's life is in service.lifecycle.

State changes are single conditional UPDATEs (`... WHERE status = 'queued'`, see `transition`), so
two workers, or a worker and a cancel request, can race without either overwriting the other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service import audit
from service.audit import Actor
from service.models import ErasureJob, EventKind, IdempotencyKey, JobEvent, JobStatus, utcnow


class JobNotFound(LookupError):
    pass


class JobStateConflict(RuntimeError):
    """The job is in a state that does not allow the requested action."""


class IdempotencyConflict(RuntimeError):
    """An Idempotency-Key was reused with a different request body."""


class InvalidJobRequest(ValueError):
    """The presets refused the request (the core's own validation)."""


@dataclass(frozen=True)
class JobSpec:
    """What a moderator asks for; `overrides` are eta/steps/rank/seed when given."""

    concept: str
    category: str
    preservation: list[str] | None
    anchor: str | None
    epsilon: float | None
    overrides: dict[str, Any]
    reason: str | None
    requested_by: str
    auto_deploy: bool = False

    def sha256(self) -> str:
        """A fingerprint of the request, for matching Idempotency-Key replays."""
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Submitted:
    job_id: str
    response: dict[str, Any]  # the body to send (first response, or its replay)
    replayed: bool


def preload_core() -> None:
    """Import the core (torch, diffusers) now: otherwise the first submission pays seconds for it."""
    import zerase.pipeline
    import zerase.presets  # noqa: F401


def resolve_config(spec: JobSpec, model_dir: Path | None) -> dict[str, Any]:
    """Category presets fill what the request leaves out (ε per Table 6, anchor, preservation); the
    model the workers load fixes how training samples (steps, guidance, size)."""
    from zerase.pipeline import sampling_defaults
    from zerase.presets import resolve

    s = sampling_defaults(model_dir)
    try:
        config = resolve(spec.concept, spec.category, preservation=spec.preservation, anchor=spec.anchor,
                         epsilon=spec.epsilon, sample_steps=s.steps, guidance_scale=s.guidance_scale,
                         height=s.height, width=s.width, **spec.overrides)
    except (ValueError, TypeError) as exc:
        raise InvalidJobRequest(str(exc)) from exc
    resolved: dict[str, Any] = config.to_dict()
    return resolved


def submit(db: Session, spec: JobSpec, model_dir: Path | None, render: Callable[[ErasureJob], dict[str, Any]],
           idempotency_key: str | None = None, actor: Actor | None = None) -> Submitted:
    """Create a queued job (committed, audited). With a key, a repeat of the request replays the first
    response (and is not audited again)."""
    fingerprint = spec.sha256()
    if idempotency_key and (replay := _replay(db, idempotency_key, fingerprint)):
        return replay
    config = resolve_config(spec, model_dir)
    job = ErasureJob(concept=spec.concept, category=spec.category, config=config, reason=spec.reason,
                     requested_by=spec.requested_by, status=JobStatus.QUEUED, auto_deploy=spec.auto_deploy)
    db.add(job)
    db.flush()
    add_event(db, job.id, EventKind.STATE, "queued", {"status": "queued", "requested_by": spec.requested_by})
    audit.record(db, actor or Actor(spec.requested_by), "erasure.submit", job.id,
                 {"concept": spec.concept, "category": spec.category, "reason": spec.reason})
    response = render(job)
    if idempotency_key:
        db.add(IdempotencyKey(key=idempotency_key, request_sha256=fingerprint, job_id=job.id,
                              response=response))
    try:
        db.commit()
    except IntegrityError:
        # A concurrent request with the same key committed first: answer as it did.
        db.rollback()
        if idempotency_key and (replay := _replay(db, idempotency_key, fingerprint)):
            return replay
        raise
    return Submitted(job.id, response, replayed=False)


def _replay(db: Session, key: str, fingerprint: str) -> Submitted | None:
    row = db.get(IdempotencyKey, key)
    if row is None:
        return None
    if row.request_sha256 != fingerprint:
        raise IdempotencyConflict(f"Idempotency-Key {key!r} was already used with a different request body "
                                  f"(job {row.job_id}); use a new key for a new request")
    return Submitted(row.job_id, row.response, replayed=True)


def get_job(db: Session, job_id: str) -> ErasureJob:
    job = db.get(ErasureJob, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def list_jobs(db: Session, *, limit: int, cursor: str | None = None, status: str | None = None,
              concept: str | None = None, category: str | None = None) -> tuple[list[ErasureJob], bool]:
    """Newest first; `cursor` is the last id of the previous page. Returns (page, has_more)."""
    query = select(ErasureJob).order_by(ErasureJob.id.desc()).limit(limit + 1)
    if cursor:
        query = query.where(ErasureJob.id < cursor)
    if status:
        query = query.where(ErasureJob.status == status)
    if concept:
        query = query.where(func.lower(ErasureJob.concept) == concept.lower())
    if category:
        query = query.where(ErasureJob.category == category)
    rows = list(db.scalars(query))
    return rows[:limit], len(rows) > limit


def add_event(db: Session, job_id: str, kind: EventKind, message: str,
              data: dict[str, Any] | None = None) -> None:
    db.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


def list_events(db: Session, job_id: str, *, limit: int,
                cursor: int | None = None) -> tuple[list[JobEvent], bool]:
    """Oldest first; `cursor` is the last event id of the previous page."""
    get_job(db, job_id)
    query = select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id).limit(limit + 1)
    if cursor is not None:
        query = query.where(JobEvent.id > cursor)
    rows = list(db.scalars(query))
    return rows[:limit], len(rows) > limit


def transition(db: Session, job_id: str, from_status: Sequence[str], **values: Any) -> bool:
    result = db.execute(update(ErasureJob).where(ErasureJob.id == job_id, ErasureJob.status.in_(from_status))
                        .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel(db: Session, job_id: str, actor: Actor) -> ErasureJob:
    """Queued: cancelled at once. Running: flagged, the worker stops at its next step. Finished: conflict."""
    now = utcnow()
    if transition(db, job_id, [JobStatus.QUEUED], status=JobStatus.CANCELLED, cancel_requested_at=now,
                   finished_at=now):
        add_event(db, job_id, EventKind.STATE, "cancelled before it started", {"status": "cancelled"})
    elif transition(db, job_id, [JobStatus.RUNNING], cancel_requested_at=now):
        add_event(db, job_id, EventKind.INFO, "cancel requested; stopping at the next step")
    else:
        job = get_job(db, job_id)
        raise JobStateConflict(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")
    audit.record(db, actor, "erasure.cancel", job_id)
    db.commit()
    return fresh(db, job_id)


def retry(db: Session, job_id: str, actor: Actor) -> ErasureJob:
    """Put a failed job back in the queue; training resumes from its last checkpoint if one is left."""
    if not transition(db, job_id, [JobStatus.FAILED], status=JobStatus.QUEUED, error=None, finished_at=None,
                       enqueued_at=None, cancel_requested_at=None):
        job = get_job(db, job_id)
        raise JobStateConflict(f"job {job_id} is {job.status}; only failed jobs can be retried")
    add_event(db, job_id, EventKind.STATE, "queued again (retry)", {"status": "queued"})
    audit.record(db, actor, "erasure.retry", job_id)
    db.commit()
    return fresh(db, job_id)


def fresh(db: Session, job_id: str) -> ErasureJob:
    job = get_job(db, job_id)
    db.refresh(job)
    return job
