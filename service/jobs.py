"""The job service: every state change of an erasure job, shared by the API and the workers.

Transitions are single conditional UPDATEs (`... WHERE status = 'queued'`), so two workers, or a
worker and a cancel request, can race without either overwriting the other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.models import FINISHED, ErasureJob, EventKind, IdempotencyKey, JobEvent, JobStatus, utcnow
from service.settings import Settings
from service.store import StoredArtifact


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

    def sha256(self) -> str:
        """A fingerprint of the request, for matching Idempotency-Key replays."""
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Submitted:
    job_id: str
    response: dict[str, Any]  # the body to send (first response, or its replay)
    replayed: bool


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
           idempotency_key: str | None = None) -> Submitted:
    """Create a queued job (committed). With a key, a repeat of the request replays the first response."""
    fingerprint = spec.sha256()
    if idempotency_key and (replay := _replay(db, idempotency_key, fingerprint)):
        return replay
    config = resolve_config(spec, model_dir)
    job = ErasureJob(concept=spec.concept, category=spec.category, config=config, reason=spec.reason,
                     requested_by=spec.requested_by, status=JobStatus.QUEUED)
    db.add(job)
    db.flush()
    add_event(db, job.id, EventKind.STATE, "queued", {"status": "queued", "requested_by": spec.requested_by})
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


def _transition(db: Session, job_id: str, from_status: Sequence[str], **values: Any) -> bool:
    result = db.execute(update(ErasureJob).where(ErasureJob.id == job_id, ErasureJob.status.in_(from_status))
                        .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def cancel(db: Session, job_id: str) -> ErasureJob:
    """Queued: cancelled at once. Running: flagged, the worker stops at its next step. Finished: conflict."""
    now = utcnow()
    if _transition(db, job_id, [JobStatus.QUEUED], status=JobStatus.CANCELLED, cancel_requested_at=now,
                   finished_at=now):
        add_event(db, job_id, EventKind.STATE, "cancelled before it started", {"status": "cancelled"})
    elif _transition(db, job_id, [JobStatus.RUNNING], cancel_requested_at=now):
        add_event(db, job_id, EventKind.INFO, "cancel requested; stopping at the next step")
    else:
        job = get_job(db, job_id)
        raise JobStateConflict(f"job {job_id} is {job.status}; only queued or running jobs can be cancelled")
    db.commit()
    return _fresh(db, job_id)


def retry(db: Session, job_id: str) -> ErasureJob:
    """Put a failed job back in the queue; training resumes from its last checkpoint if one is left."""
    if not _transition(db, job_id, [JobStatus.FAILED], status=JobStatus.QUEUED, error=None, finished_at=None,
                       enqueued_at=None, cancel_requested_at=None):
        job = get_job(db, job_id)
        raise JobStateConflict(f"job {job_id} is {job.status}; only failed jobs can be retried")
    add_event(db, job_id, EventKind.STATE, "queued again (retry)", {"status": "queued"})
    db.commit()
    return _fresh(db, job_id)


def _fresh(db: Session, job_id: str) -> ErasureJob:
    job = get_job(db, job_id)
    db.refresh(job)
    return job


def mark_enqueued(db: Session, job_id: str) -> None:
    _transition(db, job_id, [JobStatus.QUEUED], enqueued_at=utcnow())
    db.commit()


def claim(db: Session, job_id: str, worker: str) -> ErasureJob | None:
    """queued -> running for this worker; None when someone else has it or it is no longer queued."""
    now = utcnow()
    if not _transition(db, job_id, [JobStatus.QUEUED], status=JobStatus.RUNNING, worker=worker,
                       attempts=ErasureJob.attempts + 1, started_at=func.coalesce(ErasureJob.started_at, now),
                       heartbeat_at=now):
        db.rollback()
        return None
    job = _fresh(db, job_id)
    add_event(db, job_id, EventKind.STATE, f"running (attempt {job.attempts}) on {worker}",
              {"status": "running", "attempt": job.attempts, "worker": worker})
    db.commit()
    return job


def cancel_requested(db: Session, job_id: str) -> bool:
    flagged = db.scalar(select(ErasureJob.cancel_requested_at).where(ErasureJob.id == job_id))
    return flagged is not None


def record_progress(db: Session, job_id: str, progress: dict[str, Any], event: bool) -> None:
    _transition(db, job_id, [JobStatus.RUNNING], progress=progress, heartbeat_at=utcnow())
    if event:
        add_event(db, job_id, EventKind.METRICS, f"step {progress['step']}/{progress['total']}", progress)
    db.commit()


def heartbeat(db: Session, job_id: str) -> None:
    _transition(db, job_id, [JobStatus.RUNNING], heartbeat_at=utcnow())
    db.commit()


def finish(db: Session, job_id: str, status: JobStatus, message: str, *, error: str | None = None,
           artifact: StoredArtifact | None = None, data: dict[str, Any] | None = None) -> bool:
    """running -> succeeded | failed | cancelled (or back to queued); False if the job was not running."""
    values: dict[str, Any] = {"status": status, "error": error}
    if status in FINISHED:
        values["finished_at"] = utcnow()
    else:
        values["enqueued_at"] = None
    if artifact:
        values.update(artifact_uri=artifact.uri, artifact_sha256=artifact.sha256,
                      artifact_bytes=artifact.bytes)
    if not _transition(db, job_id, [JobStatus.RUNNING], **values):
        db.rollback()
        return False
    kind = EventKind.ERROR if status == JobStatus.FAILED else EventKind.STATE
    add_event(db, job_id, kind, message, {"status": str(status), **(data or {})})
    db.commit()
    return True


def sweep(db: Session, settings: Settings) -> list[str]:
    """Requeue running jobs whose worker stopped heart-beating; return the ids that need a broker message.

    Also returns queued jobs that the broker never accepted (enqueued_at empty for a while).
    """
    now = utcnow()
    stale = db.scalars(select(ErasureJob).where(
        ErasureJob.status == JobStatus.RUNNING,
        ErasureJob.heartbeat_at < now - timedelta(seconds=settings.stale_after_s))).all()
    requeued = []
    for job in stale:
        silent = f"worker {job.worker} silent since {job.heartbeat_at:%Y-%m-%dT%H:%M:%SZ}"
        if job.attempts >= settings.max_attempts:
            finish(db, job.id, JobStatus.FAILED, f"{silent}; gave up after {job.attempts} attempts",
                   error=f"worker lost {job.attempts} times")
        elif finish(db, job.id, JobStatus.QUEUED, f"{silent}; queued again"):
            requeued.append(job.id)
    # A grace period, so a job the API has just committed but not yet handed over is left to the API.
    grace = now - timedelta(seconds=settings.sweep_interval_s)
    unsent = db.scalars(select(ErasureJob.id).where(
        ErasureJob.status == JobStatus.QUEUED, ErasureJob.enqueued_at.is_(None),
        ErasureJob.updated_at < grace).order_by(ErasureJob.id))
    return requeued + [job_id for job_id in unsent if job_id not in requeued]


def next_queued(db: Session) -> str | None:
    """The oldest queued job (embedded worker: the database is the queue)."""
    return db.scalar(select(ErasureJob.id).where(ErasureJob.status == JobStatus.QUEUED)
                     .order_by(ErasureJob.id).limit(1))
