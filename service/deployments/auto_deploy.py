"""Auto-deploy: a job submitted with `auto_deploy` is deployed when it succeeds.

A subscriber of the job-finished event (service.core.events), so training knows nothing of it. The
job has succeeded whatever happens here; a deployment that fails (the deploy gate refusing it, say)
is an error event to act on.
"""

from __future__ import annotations

import logging

from service.audit.service import Actor
from service.core.db import session_factory
from service.core.events import JobFinished
from service.core.settings import Settings
from service.deployments.gate import GatePolicy
from service.deployments.service import deploy_erasure
from service.erasures.contract import EventKind, JobStatus
from service.erasures.lifecycle import add_event

log = logging.getLogger(__name__)


def on_job_finished(event: JobFinished) -> None:
    if event.status != JobStatus.SUCCEEDED or not event.auto_deploy:
        return
    sessions = session_factory(event.database_url)
    try:
        with sessions() as db:
            # The process's own settings: the gate an operator configured applies to auto-deploy too.
            deployment = deploy_erasure(db, event.job_id, Actor(f"auto_deploy ({event.requested_by})"),
                                        gate=GatePolicy.of(Settings()))
            add_event(db, event.job_id, EventKind.INFO, f"deployed as version {deployment.version}",
                      {"deployment_version": deployment.version})
            db.commit()
    except Exception as exc:
        log.exception("auto_deploy of %s failed", event.job_id)
        with sessions() as db:
            add_event(db, event.job_id, EventKind.ERROR, f"auto_deploy failed: {exc}", {"auto_deploy": "failed"})
            db.commit()
