"""The one task: "look at job N". The job itself is read from the database by run_job."""

from __future__ import annotations

from sqlalchemy.exc import OperationalError

from service.erasures.runner import run_job
from worker.celery_app import app, settings
from worker.dispatch import TASK_NAME


# The database down when the message arrives: try again later rather than drop the message (the job
# stays queued in the database either way; the sweeper would resend it, but much later).
@app.task(name=TASK_NAME, autoretry_for=(OperationalError,), retry_backoff=2, retry_backoff_max=60,
          max_retries=30)
def run_erasure(job_id: str) -> str | None:
    return run_job(job_id, settings)
