"""The sweeper's query: running jobs whose worker went silent, queued jobs whose message may be lost."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from service.core.settings import Settings
from service.core.tables import utcnow
from service.erasures.contract import JobStatus
from service.erasures.lifecycle import finish, requeue
from service.erasures.models import ErasureJob


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
        elif requeue(db, job.id, f"{silent}; queued again"):
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
