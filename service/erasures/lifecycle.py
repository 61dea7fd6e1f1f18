"""The worker side of a job's life: claim, progress, heartbeat, the end, and the sweeper's requeue.

Each step is one conditional UPDATE on the job row (see service.jobs.transition), so a worker, a
cancel request and the sweeper can race without overwriting each other.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from service.jobs import add_event, fresh, transition
from service.models import FINISHED, ErasureJob, EventKind, JobStatus, utcnow
from service.settings import Settings
from service.store import StoredArtifact

log = logging.getLogger(__name__)


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


def finish(db: Session, job_id: str, status: JobStatus, message: str, *, error: str | None = None,
           artifact: StoredArtifact | None = None, data: dict[str, Any] | None = None,
           evaluation: dict[str, Any] | None = None, preview: StoredArtifact | None = None) -> bool:
    """running -> succeeded | failed | cancelled (or back to queued); False if the job was not running."""
    values: dict[str, Any] = {"status": status, "error": error}
    if status in FINISHED:
        values["finished_at"] = utcnow()
    else:
        values["enqueued_at"] = None
    if artifact:
        values.update(artifact_uri=artifact.uri, artifact_sha256=artifact.sha256,
                      artifact_bytes=artifact.bytes)
    if evaluation is not None:
        values["evaluation"] = evaluation
    if preview:
        values.update(preview_uri=preview.uri, preview_sha256=preview.sha256)
    if not transition(db, job_id, [JobStatus.RUNNING], **values):
        db.rollback()
        return False
    kind = EventKind.ERROR if status == JobStatus.FAILED else EventKind.STATE
    add_event(db, job_id, kind, message, {"status": str(status), **(data or {})})
    db.commit()
    # job_id given, not only from the context: the sweeper ends other workers' jobs.
    log.log(logging.WARNING if status == JobStatus.FAILED else logging.INFO, "%s", message, extra={"job_id": job_id})
    return True


def sweep(db: Session, settings: Settings) -> list[str]:
    """Requeue running jobs whose worker stopped heart-beating; return the ids that need a broker message.

    Also returns queued jobs that the broker never accepted (enqueued_at empty for a while), and those
    sent more than `resend_queued_after_s` ago.
    """
    now = utcnow()
    stale = db.scalars(select(ErasureJob).where(
        ErasureJob.status == JobStatus.RUNNING,
        ErasureJob.heartbeat_at < now - timedelta(seconds=settings.stale_after_s))).all()
    requeued = []
    for job in stale:
        silent = f"worker {job.worker} silent since {job.heartbeat_at:%Y-%m-%dT%H:%M:%SZ}"
        if job.cancel_requested_at is not None:  # nobody wants it run again
            finish(db, job.id, JobStatus.CANCELLED, f"{silent}; cancelled as requested")
        elif job.attempts >= settings.max_attempts:
            finish(db, job.id, JobStatus.FAILED, f"{silent}; gave up after {job.attempts} attempts",
                   error=f"worker lost {job.attempts} times")
        elif finish(db, job.id, JobStatus.QUEUED, f"{silent}; queued again"):
            requeued.append(job.id)
    # Never sent (after a grace period, so a job the API has just committed is left to the API), or sent
    # long ago and still queued: that message may be gone with a broker's data. A resend costs a no-op
    # claim if it was not; enqueued_at is renewed when it goes out.
    grace = now - timedelta(seconds=settings.sweep_interval_s)
    overdue = now - timedelta(seconds=settings.resend_queued_after_s)
    resend = db.scalars(select(ErasureJob.id).where(
        ErasureJob.status == JobStatus.QUEUED,
        or_(and_(ErasureJob.enqueued_at.is_(None), ErasureJob.updated_at < grace), ErasureJob.enqueued_at < overdue),
    ).order_by(ErasureJob.id))
    return requeued + [job_id for job_id in resend if job_id not in requeued]


def next_queued(db: Session) -> str | None:
    """The oldest queued job (embedded worker: the database is the queue)."""
    return db.scalar(select(ErasureJob.id).where(ErasureJob.status == JobStatus.QUEUED)
                     .order_by(ErasureJob.id).limit(1))
