"""The webhooks domain's tables: subscriptions, their deliveries (the outbox the deliverer drains) and
each delivery's attempts (the log an admin reads)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from service.core.tables import Base, EventId, UTCDateTime, check_in, utcnow
from service.webhooks.contract import MAX_DESCRIPTION, MAX_ERROR, MAX_URL, DeliveryStatus


class Subscription(Base):
    """Where to POST which events. The secret is kept as it is, since signing needs it; the API shows it
    only when the subscription is made. Deleting keeps the row (its deliveries refer to it)."""

    __tablename__ = "webhook_subscription"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    url: Mapped[str] = mapped_column(String(MAX_URL))
    event_types: Mapped[list[str]] = mapped_column(JSON)
    description: Mapped[str | None] = mapped_column(String(MAX_DESCRIPTION))
    secret: Mapped[str] = mapped_column(String(100))
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Attempt(Base):
    """One POST of a delivery: the receiver's status code, or why there was none."""

    __tablename__ = "webhook_attempt"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(ForeignKey("webhook_delivery.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(String(MAX_ERROR))
    duration_ms: Mapped[int] = mapped_column(Integer)


class Delivery(Base):
    """One event for one subscription. `id` is the message's `webhook-id`, the same on every attempt, so a
    receiver can drop repeats. Pending ones are due at `next_attempt_at` (NULL once it has ended)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (CheckConstraint(check_in("status", DeliveryStatus), name="status"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("webhook_subscription.id"), index=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"type", "timestamp", "data"}: the body sent
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(MAX_ERROR))
    last_duration_ms: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    log: Mapped[list[Attempt]] = relationship(order_by=Attempt.id, lazy="raise", passive_deletes=True)
