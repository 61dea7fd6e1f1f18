"""What follows what: the subscriptions between domains, wired once per process by the adapters
(the API app and the Celery worker) before they serve. Webhooks and notifications go here too."""

from __future__ import annotations

from service.core import events
from service.deployments import auto_deploy


def install() -> None:
    """Subscribe every reaction to its event (idempotent)."""
    events.subscribe(events.JobFinished, auto_deploy.on_job_finished)
