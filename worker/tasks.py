"""The one task: "look at job N". The job itself is read from the database by run_job."""

from __future__ import annotations

from service.queue import TASK_NAME
from service.runner import run_job
from worker.celery_app import app, settings


@app.task(name=TASK_NAME)
def run_erasure(job_id: str) -> str | None:
    return run_job(job_id, settings)
