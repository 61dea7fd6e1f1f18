"""A job's life as a state machine: claim, progress, heartbeat, requeue, and the one `finish()`.

Each change is one conditional UPDATE on the job row (`... WHERE status IN (...)`, see
`transition`), so workers, cancel requests and the sweeper can race without overwriting each other.
Every terminal state — succeeded, failed or cancelled, from the worker, the API or the sweeper —
goes through `finish()`, which publishes `JobFinished` once its transaction has committed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
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


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a job: its name and the attempt it claimed. A worker that stalled past the
    heartbeat timeout may find the job requeued and claimed again (attempt + 1): every write it makes
    is conditional on the claim, so it can no longer change what its successor does."""

    job_id: str
    worker: str
    attempt: int

    @classmethod
    def of(cls, job: ErasureJob) -> Claim:
        assert job.worker is not None
        return cls(job.id, job.worker, job.attempts)


@dataclass(frozen=True)
class Standing:
    owner: bool  # the claim still holds (the job is running under it)
    cancel_requested: bool


def transition(db: Session, job_id: str, from_status: Sequence[str], *, claim: Claim | None = None,
               where: Sequence[ColumnElement[bool]] = (), **values: Any) -> bool:
    """One conditional UPDATE: only from `from_status` (and under `claim`, and `where`); True if it applied."""
    conditions = [ErasureJob.id == job_id, ErasureJob.status.in_(from_status), *where]
    if claim is not None:
        conditions += [ErasureJob.worker == claim.worker, ErasureJob.attempts == claim.attempt]
    result = db.execute(update(ErasureJob).where(*conditions).values(updated_at=utcnow(), **values)
                        .execution_options(synchronize_session=False))
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


def standing(db: Session, claim: Claim) -> Standing:
    """Whether `claim` still holds the job, and whether a cancel was asked for: one read."""
    row = db.execute(select(ErasureJob.status, ErasureJob.worker, ErasureJob.attempts,
                            ErasureJob.cancel_requested_at).where(ErasureJob.id == claim.job_id)).one()
    owner = row.status == JobStatus.RUNNING and row.worker == claim.worker and row.attempts == claim.attempt
    return Standing(owner=owner, cancel_requested=row.cancel_requested_at is not None)


def record_progress(db: Session, claim: Claim, progress: dict[str, Any], event: bool) -> bool:
    if not transition(db, claim.job_id, [JobStatus.RUNNING], claim=claim, progress=progress, heartbeat_at=utcnow()):
        db.rollback()
        return False
    if event:
        add_event(db, claim.job_id, EventKind.METRICS, f"step {progress['step']}/{progress['total']}",
                  {k: v for k, v in progress.items() if k != "curve"})  # the row has the curve; events, the point
    db.commit()
    return True


def heartbeat(db: Session, claim: Claim) -> None:
    transition(db, claim.job_id, [JobStatus.RUNNING], claim=claim, heartbeat_at=utcnow())
    db.commit()


def requeue(db: Session, job_id: str, message: str, data: dict[str, Any] | None = None, *,
            claim: Claim | None = None) -> bool:
    """running -> queued (worker shutting down, or lost): it resumes from its checkpoint; False if it was
    not running (under `claim`, when given)."""
    if not transition(db, job_id, [JobStatus.RUNNING], claim=claim, status=JobStatus.QUEUED, enqueued_at=None):
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
           actor: Actor | None = None, action: str | None = None, claim: Claim | None = None) -> bool:
    """`expected` -> succeeded | failed | cancelled, committed (with the audit line of `action` by `actor`,
    when given), then `JobFinished` is published. False, and nothing changed, if the job was not in an
    `expected` state, not under `claim` (when given), or, to succeed, if a cancel has been requested: a
    job cancelled after its last training step must not succeed, nor auto-deploy."""
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
    where = [ErasureJob.cancel_requested_at.is_(None)] if status == JobStatus.SUCCEEDED else []
    if not transition(db, job_id, expected, claim=claim, where=where, **values):
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
                                      database_url=events.database_url(db)))
    return True


def next_queued(db: Session) -> str | None:
    """The next queued job, most urgent first, then oldest (embedded worker: the database is the queue)."""
    return db.scalar(select(ErasureJob.id).where(ErasureJob.status == JobStatus.QUEUED)
                     .order_by(ErasureJob.priority.desc(), ErasureJob.id).limit(1))
