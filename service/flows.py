"""What follows what: the subscriptions between domains, wired once per process by the adapters
(the API app and the Celery worker) before they serve. Webhooks and notifications go here too."""

from __future__ import annotations

from typing import Any

from service.approvals import auto_deploy
from service.core import events
from service.core.settings import Settings
from service.deployments import gate, guard
from service.erasures import retune
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
    retune.install_judge(gate_misses)  # a job trains again while its evaluation misses the gate, within limits


def gate_misses(settings: Settings, job_id: str, evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """What the deploy gate would refuse the job's erasure for, alone ([] with the gate off: nothing to tune to)."""
    policy = gate.GatePolicy.of(settings)
    if policy is None:
        return []
    return [{"metric": m.metric, "value": m.value, "limit": m.limit, "concept": m.concept}
            for m in gate.misses(policy, job_id, evaluation)]
