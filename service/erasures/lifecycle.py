"""A job's life as a state machine: claim, progress, heartbeat, requeue, and the one `finish()`.

Each change is one conditional UPDATE on the job row (`... WHERE status IN (...)`, see
`transition`), so workers, cancel requests and the sweeper can race without overwriting each other.
Every terminal state — succeeded, failed or cancelled, from the worker, the API or the sweeper —
goes through `finish()`, which publishes `JobFinished` once its transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from service.audit.service import Actor, record
from service.core import events
from service.core.store import StoredArtifact
from service.core.tables import utcnow
from service.erasures.contract import FINISHED, EventKind, JobStatus
from service.erasures.errors import JobNotFound
from service.erasures.models import ErasureJob, JobEvent

log = logging.getLogger(__name__)


def get_job(db: Session, job_id: str) -> ErasureJob:
    job = db.get(ErasureJob, job_id)
    if job is None:
        raise JobNotFound(job_id)
    return job


def fresh(db: Session, job_id: str) -> ErasureJob:
    job = get_job(db, job_id)
    db.refresh(job)
    return job


def transition(db: Session, job_id: str, from_status: Sequence[str], **values: Any) -> bool:
    result = db.execute(update(ErasureJob).where(ErasureJob.id == job_id, ErasureJob.status.in_(from_status))
                        .values(updated_at=utcnow(), **values).execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def add_event(db: Session, job_id: str, kind: EventKind, message: str,
              data: dict[str, Any] | None = None) -> None:
    db.add(JobEvent(job_id=job_id, kind=kind, message=message, data=data))


def mark_enqueued(db: Session, job_id: str) -> None:
    transition(db, job_id, [JobStatus.QUEUED], enqueued_at=utcnow())
    db.commit()


def claim(db: Session, job_id: str, worker: str) -> ErasureJob | None:
    """queued -> running for this worker; None when someone else has it or it is no longer queued."""
    now = utcnow()
    if not transition(db, job_id, [JobStatus.QUEUED], status=JobStatus.RUNNING, worker=worker,
                       attempts=ErasureJob.attempts + 1, started_at=func.coalesce(ErasureJob.started_at, now),
                       heartbeat_at=now):
        db.rollback()
        return None
    job = fresh(db, job_id)
    add_event(db, job_id, EventKind.STATE, f"running (attempt {job.attempts}) on {worker}",
              {"status": "running", "attempt": job.attempts, "worker": worker})
    db.commit()
    log.info("running (attempt %d) on %s", job.attempts, worker, extra={"job_id": job_id})
    return job


def cancel_requested(db: Session, job_id: str) -> bool:
    flagged = db.scalar(select(ErasureJob.cancel_requested_at).where(ErasureJob.id == job_id))
    return flagged is not None


def record_progress(db: Session, job_id: str, progress: dict[str, Any], event: bool) -> None:
    transition(db, job_id, [JobStatus.RUNNING], progress=progress, heartbeat_at=utcnow())
    if event:
        add_event(db, job_id, EventKind.METRICS, f"step {progress['step']}/{progress['total']}", progress)
    db.commit()


def heartbeat(db: Session, job_id: str) -> None:
    transition(db, job_id, [JobStatus.RUNNING], heartbeat_at=utcnow())
    db.commit()


def requeue(db: Session, job_id: str, message: str, data: dict[str, Any] | None = None) -> bool:
    """running -> queued (worker shutting down, or lost): it resumes from its checkpoint; False if it was
    not running."""
    if not transition(db, job_id, [JobStatus.RUNNING], status=JobStatus.QUEUED, enqueued_at=None):
        db.rollback()
        return False
    add_event(db, job_id, EventKind.STATE, message, {"status": "queued", **(data or {})})
    db.commit()
    log.info("%s", message, extra={"job_id": job_id})
    return True


def finish(db: Session, job_id: str, status: JobStatus, message: str, *,
           expected: Sequence[JobStatus] = (JobStatus.RUNNING,), error: str | None = None,
           artifact: StoredArtifact | None = None, data: dict[str, Any] | None = None,
           evaluation: dict[str, Any] | None = None, preview: StoredArtifact | None = None,
           actor: Actor | None = None, action: str | None = None) -> bool:
    """`expected` -> succeeded | failed | cancelled, committed (with the audit line of `action` by `actor`,
    when given), then `JobFinished` is published. False, and nothing changed, if the job was not in an
    `expected` state."""
    if status not in FINISHED:
        raise ValueError(f"{status} is not a terminal state")
    now = utcnow()
    values: dict[str, Any] = {"status": status, "error": error, "finished_at": now}
    if status == JobStatus.CANCELLED:
        values["cancel_requested_at"] = func.coalesce(ErasureJob.cancel_requested_at, now)
    if artifact:
        values.update(artifact_uri=artifact.uri, artifact_sha256=artifact.sha256, artifact_bytes=artifact.bytes)
    if evaluation is not None:
        values["evaluation"] = evaluation
    if preview:
        values.update(preview_uri=preview.uri, preview_sha256=preview.sha256)
    if not transition(db, job_id, expected, **values):
        db.rollback()
        return False
    kind = EventKind.ERROR if status == JobStatus.FAILED else EventKind.STATE
    add_event(db, job_id, kind, message, {"status": str(status), **(data or {})})
    if actor is not None and action is not None:
        record(db, actor, action, job_id)
    db.commit()
    # job_id given, not only from the context: the sweeper and the API end other workers' jobs.
    log.log(logging.WARNING if status == JobStatus.FAILED else logging.INFO, "%s", message, extra={"job_id": job_id})
    job = fresh(db, job_id)
    events.publish(events.JobFinished(job_id=job_id, status=str(status), concept=job.concept,
                                      requested_by=job.requested_by, auto_deploy=job.auto_deploy,
                                      database_url=db.get_bind().engine.url.render_as_string(hide_password=False)))
    return True


def next_queued(db: Session) -> str | None:
    """The oldest queued job (embedded worker: the database is the queue)."""
    return db.scalar(select(ErasureJob.id).where(ErasureJob.status == JobStatus.QUEUED)
                     .order_by(ErasureJob.id).limit(1))
