"""Auto-deploy: a job submitted with `auto_deploy` is deployed when it succeeds (with approvals on, a pending
request to deploy it, on behalf of the job's key, which therefore cannot approve it).

A subscriber of the job-finished event (service.core.events), so training knows nothing of it. It lives with the
approvals, above the deployments, because whether a deploy happens at once is theirs to decide. The job has
succeeded whatever happens here; a deployment that fails (the deploy gate refusing it, say) is an error event to
act on.
"""

from __future__ import annotations

import logging

from service.approvals.models import ApprovalRequest
from service.approvals.service import deploy_or_request
from service.audit.service import Actor
from service.core.db import session_factory
from service.core.events import JobFinished
from service.core.settings import Settings
from service.erasures.contract import EventKind, JobStatus
from service.erasures.lifecycle import add_event
from service.erasures.models import ErasureJob

log = logging.getLogger(__name__)


def on_job_finished(event: JobFinished) -> None:
    if event.status != JobStatus.SUCCEEDED or not event.auto_deploy:
        return
    sessions = session_factory(event.database_url)
    try:
        with sessions() as db:
            job = db.get(ErasureJob, event.job_id)
            requester = Actor(event.requested_by, job.requested_key_id if job else None)
            # The process's own settings: the gate and the approvals an operator configured apply to auto-deploy too.
            result = deploy_or_request(db, event.job_id, Actor(f"auto_deploy ({event.requested_by})"), Settings(),
                                       reason=f"auto_deploy of {event.job_id}", requester=requester)
            if isinstance(result, ApprovalRequest):
                add_event(db, event.job_id, EventKind.INFO, f"deploy waits for approval {result.id}",
                          {"approval_id": result.id})
            elif result.pending_activation:
                add_event(db, event.job_id, EventKind.INFO, f"version {result.version} waits to be judged as "
                          "served with the erasures already deployed; it goes live if the gate passes it",
                          {"deployment_version": result.version, "pending_activation": True})
            else:
                add_event(db, event.job_id, EventKind.INFO, f"deployed as version {result.version}",
                          {"deployment_version": result.version})
            db.commit()
    except Exception as exc:
        log.exception("auto_deploy of %s failed", event.job_id)
        with sessions() as db:
            add_event(db, event.job_id, EventKind.ERROR, f"auto_deploy failed: {exc}", {"auto_deploy": "failed"})
            db.commit()
