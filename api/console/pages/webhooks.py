"""Webhooks (admins): subscriptions, a new one's signing secret shown once, deletion, each one's delivery log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from api.console import actions
from api.console.render import render
from api.console.session import FormOf, Page, User
from service.core.errors import DomainError
from service.webhooks import service as webhooks
from service.webhooks.contract import WEBHOOK_ID_PATTERN, EventType

router = APIRouter()
Admin = Annotated[User, Depends(Page())]
AdminForm = Annotated[User, Depends(FormOf())]
WebhookId = Annotated[str, Path(pattern=WEBHOOK_ID_PATTERN)]


@router.get("/webhooks", name="console-webhooks")
def webhooks_page(request: Request, user: Admin) -> Response:
    return _page(request, user)


@router.post("/webhooks", name="console-create-webhook")
def create(request: Request, user: AdminForm, url: Annotated[str, Form()] = "",
           events: Annotated[list[str] | None, Form()] = None, description: Annotated[str, Form()] = "") -> Response:
    values = {"url": url, "events": events or [], "description": description}
    try:
        subscription, secret = webhooks.create_subscription(user.db, url.strip(), events or [], user.session.actor,
                                                            description.strip() or None)
    except DomainError as exc:
        user.db.rollback()
        return _page(request, user, values=values, errors={(exc.field or "url").split("[")[0]: str(exc)}, status=422)
    return _page(request, user, created={"subscription": subscription, "secret": secret})


@router.post("/webhooks/{webhook_id}/delete", name="console-delete-webhook")
def delete(user: AdminForm, webhook_id: WebhookId) -> Response:
    with actions.reported(user, "Delete"):
        webhooks.delete_subscription(user.db, webhook_id, user.session.actor)
        actions.flash(user, f"Webhook {webhook_id} is deleted")
    return actions.back("/webhooks")


@router.post("/webhooks/{webhook_id}/test", name="console-test-webhook")
def test(user: AdminForm, webhook_id: WebhookId) -> Response:
    with actions.reported(user, "Test"):
        delivery = webhooks.send_test(user.db, webhook_id)
        actions.flash(user, f"Test delivery {delivery.id} queued")
    return actions.back(f"/webhooks/{webhook_id}")


@router.get("/webhooks/{webhook_id}", name="console-webhook")
def webhook(request: Request, user: Admin, webhook_id: WebhookId) -> Response:
    subscription = webhooks.get_subscription(user.db, webhook_id)
    return render(request, "webhook.html", user, subscription=subscription,
                  deliveries=webhooks.deliveries(user.db, webhook_id, limit=50))


def _page(request: Request, user: User, values: Mapping[str, object] | None = None,
          errors: dict[str, str] | None = None, created: dict[str, object] | None = None,
          status: int = 200) -> Response:
    return render(request, "webhooks.html", user, status_code=status,
                  subscriptions=webhooks.list_subscriptions(user.db),
                  event_types=[e.value for e in EventType], values=values or {"events": []}, errors=errors or {},
                  created=created)
