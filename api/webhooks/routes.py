"""Admin only: webhook subscriptions (create, list, get, delete), their delivery log, a test ping."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from api.auth import ActorDep, require
from api.deps import SessionDep, SettingsDep
from api.openapi import problems
from api.webhooks.schemas import DeliveryList, DeliveryOut, WebhookCreate, WebhookCreated, WebhookList, WebhookOut
from service.keys.contract import Role
from service.webhooks import service as webhooks
from service.webhooks.contract import MAX_DELIVERIES_PAGE, WEBHOOK_ID_PATTERN
from service.webhooks.targets import TargetPolicy

router = APIRouter(tags=["webhooks"], dependencies=[Depends(require(Role.ADMIN))], responses=problems(401, 403))

WebhookId = Annotated[str, Path(pattern=WEBHOOK_ID_PATTERN)]


@router.post("/webhooks", name="create", status_code=201, response_model=WebhookCreated,
             responses=problems(409, 422))
def create_webhook(body: WebhookCreate, db: SessionDep, actor: ActorDep, settings: SettingsDep) -> WebhookCreated:
    """A new subscription; its signing secret is in this response only."""
    subscription, secret = webhooks.create_subscription(db, body.url, body.events, actor, body.description,
                                                        policy=TargetPolicy.of(settings))
    return WebhookCreated(**WebhookOut.of(subscription).model_dump(), secret=secret)


@router.get("/webhooks", name="list", response_model=WebhookList)
def list_webhooks(db: SessionDep) -> WebhookList:
    return WebhookList(data=[WebhookOut.of(s) for s in webhooks.list_subscriptions(db)])


@router.get("/webhooks/{id}", name="get", response_model=WebhookOut, responses=problems(404, 422))
def get_webhook(id: WebhookId, db: SessionDep) -> WebhookOut:  # noqa: A002 (the path's name)
    return WebhookOut.of(webhooks.get_subscription(db, id))


@router.delete("/webhooks/{id}", name="delete", status_code=204, responses=problems(404, 422))
def delete_webhook(id: WebhookId, db: SessionDep, actor: ActorDep) -> None:  # noqa: A002
    """Nothing more is sent to it: deliveries still pending fail, and a send under way is aborted."""
    webhooks.delete_subscription(db, id, actor)


@router.get("/webhooks/{id}/deliveries", name="deliveries", response_model=DeliveryList,
            responses=problems(404, 422))
def list_deliveries(id: WebhookId, db: SessionDep,  # noqa: A002
                    limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES_PAGE)] = 50) -> DeliveryList:
    """The delivery log, newest first: each delivery with every attempt's status code or error."""
    return DeliveryList(data=[DeliveryOut.of(d) for d in webhooks.deliveries(db, id, limit)])


@router.post("/webhooks/{id}/test", name="test", status_code=202, response_model=DeliveryOut,
             responses=problems(404, 422))
def test_webhook(id: WebhookId, db: SessionDep) -> DeliveryOut:  # noqa: A002
    """Queue a `webhook.test` ping to this subscription; its log shows how it went."""
    return DeliveryOut.of(webhooks.send_test(db, id))
