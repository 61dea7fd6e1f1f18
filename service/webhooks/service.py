"""Webhook subscriptions: create (the signing secret shown once), list, get, delete, the delivery log,
and a test ping. The API's admin routes and the console call these.

A subscription's URL is checked against the target policy (targets.py) when it is made; the secret
is `whsec_` + 256 random bits in base64, the form Standard Webhooks libraries take as it is.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, selectinload

from service.audit.service import Actor, record
from service.core.errors import Conflict, Invalid, NotFound
from service.core.settings import get_settings
from service.core.tables import utcnow
from service.core.text import clean_text
from service.webhooks.contract import (
    MAX_DELIVERIES_PAGE,
    MAX_DESCRIPTION,
    MAX_SUBSCRIPTIONS,
    SECRET_PREFIX,
    TEST_EVENT,
    DeliveryStatus,
    EventType,
)
from service.webhooks.models import Delivery, Subscription
from service.webhooks.outbox import new_delivery
from service.webhooks.targets import TargetPolicy, resolve


class WebhookNotFound(NotFound):
    code = "webhook_not_found"

    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"no webhook with id {webhook_id}", "id", "path")


class WebhookLimit(Conflict):
    code = "webhook_limit"


def create_subscription(db: Session, url: str, events: Sequence[str], actor: Actor, description: str | None = None,
                        *, policy: TargetPolicy | None = None) -> tuple[Subscription, str]:
    """A new subscription (committed, audited) and its signing secret, shown to the caller this once.
    `policy`: the allowlist; None takes the process's settings (ZERASE_WEBHOOK_ALLOWED_HOSTS)."""
    event_types = _event_types(events)
    description = _description(description)
    resolve(url, policy or TargetPolicy.of(get_settings()))  # raises naming `url`
    live = db.scalar(select(func.count()).select_from(Subscription).where(Subscription.deleted_at.is_(None)))
    if (live or 0) >= MAX_SUBSCRIPTIONS:
        raise WebhookLimit(f"there are already {MAX_SUBSCRIPTIONS} webhooks; delete one first")
    secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()
    subscription = Subscription(id=f"whk_{secrets.token_hex(8)}", url=url, event_types=event_types,
                                description=description, secret=secret, created_by=actor.name, created_at=utcnow())
    db.add(subscription)
    db.flush()
    record(db, actor, "webhook.create", subscription.id, {"url": url, "events": event_types})
    db.commit()
    return subscription, secret


def list_subscriptions(db: Session) -> list[Subscription]:
    """The live subscriptions, oldest first."""
    return list(db.scalars(select(Subscription).where(Subscription.deleted_at.is_(None))
                           .order_by(Subscription.created_at, Subscription.id)))


def get_subscription(db: Session, webhook_id: str) -> Subscription:
    subscription = db.get(Subscription, webhook_id)
    if subscription is None or subscription.deleted_at is not None:
        raise WebhookNotFound(webhook_id)
    return subscription


def delete_subscription(db: Session, webhook_id: str, actor: Actor) -> Subscription:
    """Stop sending to it (committed, audited): its pending deliveries fail, and the deliverer aborts a send
    to it under way (deliver.py) without retrying it. The row and its log stay."""
    subscription = get_subscription(db, webhook_id)
    now = utcnow()
    subscription.deleted_at = now
    db.execute(update(Delivery).where(Delivery.subscription_id == webhook_id,
                                      Delivery.status == DeliveryStatus.PENDING)
               .values(status=DeliveryStatus.FAILED, next_attempt_at=None, finished_at=now,
                       last_error="the webhook was deleted"))
    record(db, actor, "webhook.delete", webhook_id, {"url": subscription.url})
    db.commit()
    return subscription


def deliveries(db: Session, webhook_id: str, limit: int = 50) -> list[Delivery]:
    """The subscription's deliveries, newest first, each with its attempts (`Delivery.log`)."""
    get_subscription(db, webhook_id)
    limit = max(1, min(limit, MAX_DELIVERIES_PAGE))
    return list(db.scalars(select(Delivery).where(Delivery.subscription_id == webhook_id)
                           .order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit)
                           .options(selectinload(Delivery.log))))


def send_test(db: Session, webhook_id: str) -> Delivery:
    """Queue a `webhook.test` ping to this subscription alone (committed); the deliverer sends it."""
    subscription = get_subscription(db, webhook_id)
    delivery = new_delivery(subscription.id, TEST_EVENT, {"webhook_id": subscription.id})
    db.add(delivery)
    db.commit()
    return delivery


def _event_types(events: Sequence[str]) -> list[str]:
    if not events:
        raise Invalid("name at least one event type", "events")
    known = {str(e) for e in EventType}
    for i, name in enumerate(events):
        if name not in known:
            raise Invalid(f"unknown event type {name!r}; one of {', '.join(sorted(known))}", f"events[{i}]")
    return list(dict.fromkeys(str(e) for e in events))


def _description(description: str | None) -> str | None:
    if description is None:
        return None
    try:
        description = clean_text(description)
    except ValueError as exc:
        raise Invalid(str(exc), "description") from None
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(f"at most {MAX_DESCRIPTION} characters", "description")
    return description
