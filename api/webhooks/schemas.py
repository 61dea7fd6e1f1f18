"""The webhooks HTTP contract: a new subscription's body, the subscription (its secret only on creation)
and the delivery log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.webhooks.contract import MAX_DESCRIPTION, MAX_URL, DeliveryStatus, EventType
from service.webhooks.models import Attempt, Delivery, Subscription


class WebhookCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"url": "https://hooks.example.com/zerase", "events": ["erasure.succeeded", "deployment.activated"],
         "description": "release channel"}]})

    url: Annotated[str, Field(max_length=MAX_URL, description="http(s), without credentials (user:password@); "
                                                             "must resolve to public addresses unless "
                                                             "ZERASE_WEBHOOK_ALLOWED_HOSTS allows it")]
    events: Annotated[list[EventType], Field(min_length=1, max_length=32)]
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION)] | None = None


class WebhookOut(BaseModel):
    id: str
    object: Literal["webhook"] = "webhook"
    url: str
    events: list[EventType]
    description: str | None
    created_by: str | None
    created_at: datetime

    @classmethod
    def of(cls, s: Subscription) -> WebhookOut:
        return cls(id=s.id, url=s.url, events=[EventType(e) for e in s.event_types], description=s.description,
                   created_by=s.created_by, created_at=s.created_at)


class WebhookCreated(WebhookOut):
    secret: str = Field(description="The signing secret (`whsec_...`, Standard Webhooks): shown this once")


class WebhookList(BaseModel):
    object: Literal["list"] = "list"
    data: list[WebhookOut]


class AttemptOut(BaseModel):
    at: datetime
    status_code: int | None = Field(description="The receiver's answer; null when there was none")
    error: str | None = Field(description="Why the attempt failed: HTTP status, timeout, connection, refusal")
    duration_ms: int

    @classmethod
    def of(cls, a: Attempt) -> AttemptOut:
        return cls(at=a.at, status_code=a.status_code, error=a.error, duration_ms=a.duration_ms)


class DeliveryOut(BaseModel):
    id: str = Field(description="The `webhook-id` header: the same on every attempt")
    object: Literal["webhook_delivery"] = "webhook_delivery"
    event_type: str
    status: DeliveryStatus
    payload: dict[str, Any] = Field(description="The body sent: `type`, `timestamp`, `data`")
    next_attempt_at: datetime | None
    created_at: datetime
    finished_at: datetime | None
    attempts: list[AttemptOut] = Field(description="Every try, oldest first")

    @classmethod
    def of(cls, d: Delivery) -> DeliveryOut:
        return cls(id=d.id, event_type=d.event_type, status=DeliveryStatus(d.status), payload=d.payload,
                   next_attempt_at=d.next_attempt_at, created_at=d.created_at, finished_at=d.finished_at,
                   attempts=[AttemptOut.of(a) for a in d.log])


class DeliveryList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DeliveryOut]
