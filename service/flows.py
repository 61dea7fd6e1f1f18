"""What follows what: the subscriptions between domains, wired once per process by the adapters
(the API app and the Celery worker) before they serve. Webhooks and notifications go here too."""

from __future__ import annotations

from service.approvals import auto_deploy
from service.core import events
from service.deployments import guard
from service.webhooks import outbox as webhooks


def install() -> None:
    """Subscribe every reaction to its event (idempotent)."""
    # Webhooks: rows in the outbox only; the API's deliverer sends them, so no event waits on a receiver.
    # erasure.* is queued before auto-deploy runs, so it goes out before the deployment.activated that follows.
    events.subscribe(events.JobFinished, webhooks.on_job_finished)
    events.subscribe(events.JobFinished, auto_deploy.on_job_finished)
    events.subscribe(events.JobFinished, guard.on_job_finished)  # a cancelled takedown ends its guard
    events.subscribe(events.DeploymentActivated, webhooks.on_deployment_activated)
    events.subscribe(events.ApprovalRequested, webhooks.on_approval_requested)
