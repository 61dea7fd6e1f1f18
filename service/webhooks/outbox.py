"""The outbox: each domain event becomes one pending delivery per live subscription to its type.

The handlers (wired in service/flows.py) only write rows, in a session of their own, after the
event's own transaction has committed; the deliverer (deliver.py) sends them later from the API
process. So a job or a deployment never waits on a receiver, and a receiver that is down loses
nothing: its deliveries wait in the table.
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.db import session_factory
from service.core.events import ApprovalRequested, DeploymentActivated, JobFinished
from service.core.tables import utcnow
from service.webhooks.contract import DeliveryStatus, EventType
from service.webhooks.models import Delivery, Subscription


def new_delivery(subscription_id: str, event_type: str, data: dict[str, Any]) -> Delivery:
    """A pending delivery, due now; its payload is the Standard Webhooks envelope."""
    now = utcnow()
    payload = {"type": event_type, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
    return Delivery(id=f"msg_{secrets.token_hex(12)}", subscription_id=subscription_id, event_type=event_type,
                    payload=payload, status=DeliveryStatus.PENDING, attempts=0, next_attempt_at=now, created_at=now,
                    log=[])


def enqueue(db: Session, event_type: EventType, data: dict[str, Any]) -> list[Delivery]:
    """One delivery per live subscription to `event_type`, added to the session (not committed)."""
    live = db.scalars(select(Subscription).where(Subscription.deleted_at.is_(None)))
    out = [new_delivery(s.id, event_type, data) for s in live if event_type in s.event_types]
    db.add_all(out)
    return out


def _enqueue_in(database_url: str, event_type: EventType, data: dict[str, Any]) -> None:
    with session_factory(database_url)() as db:
        if enqueue(db, event_type, data):
            db.commit()


def on_job_finished(event: JobFinished) -> None:
    _enqueue_in(event.database_url, EventType(f"erasure.{event.status}"),
                {"id": event.job_id, "object": "erasure", "status": event.status, "concept": event.concept,
                 "requested_by": event.requested_by, "url": f"/erasures/{event.job_id}"})


def on_deployment_activated(event: DeploymentActivated) -> None:
    _enqueue_in(event.database_url, EventType.DEPLOYMENT_ACTIVATED,
                {"version": event.version, "previous_version": event.previous_version,
                 "activated_by": event.activated_by})


def on_approval_requested(event: ApprovalRequested) -> None:
    _enqueue_in(event.database_url, EventType.APPROVAL_REQUESTED,
                {"id": event.approval_id, "action": event.action, "target": event.target,
                 "requested_by": event.requested_by})
