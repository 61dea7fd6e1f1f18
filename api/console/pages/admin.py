"""Admin pages: the audit log with its filters, and API keys (a new key's secret shown once, revoke)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import Response
from pydantic import ValidationError

from api.audit.schemas import AuditOut
from api.console import actions
from api.console.render import render
from api.console.session import FormOf, Page, User
from api.deps import SettingsDep
from api.keys.schemas import KeyCreate, KeyOut
from service.approvals import keys as approved_keys
from service.audit import service as audit
from service.audit.contract import AUDIT_CURSOR_PATTERN, MAX_ACTION, MAX_ACTOR, MAX_TARGET
from service.core.text import PLAIN_PARAMETER
from service.keys import service as keys
from service.keys.contract import KEY_ID_PATTERN, Role

router = APIRouter()
Admin = Annotated[User, Depends(Page())]
AdminForm = Annotated[User, Depends(FormOf())]


def _filter(max_length: int) -> object:
    # As the API's /audit filters: no control characters (a NUL cannot even be sent to PostgreSQL).
    return Query(max_length=max_length, pattern=PLAIN_PARAMETER)


@router.get("/audit", name="console-audit")
def audit_log(request: Request, user: Admin, action: Annotated[str, _filter(MAX_ACTION)] = "",
              actor: Annotated[str, _filter(MAX_ACTOR)] = "", target: Annotated[str, _filter(MAX_TARGET)] = "",
              cursor: Annotated[str | None, Query(pattern=AUDIT_CURSOR_PATTERN)] = None) -> Response:
    page, has_more = audit.list_events(user.db, limit=100, cursor=int(cursor) if cursor else None,
                                       action=action.strip() or None, actor=actor.strip() or None,
                                       target=target.strip() or None)
    return render(request, "audit.html", user, events=[AuditOut.of(e) for e in page],
                  filters={"action": action, "actor": actor, "target": target},
                  next_cursor=str(page[-1].id) if has_more else None)


@router.get("/keys", name="console-keys")
def keys_page(request: Request, user: Admin) -> Response:
    return _keys(request, user)


@router.post("/keys", name="console-create-key")
def create_key(request: Request, user: AdminForm, settings: SettingsDep, name: Annotated[str, Form()] = "",
               role: Annotated[str, Form()] = "") -> Response:
    try:
        body = KeyCreate.model_validate({"name": name, "role": role})
    except ValidationError as exc:
        return _keys(request, user, errors={str(e["loc"][0]): e["msg"] for e in exc.errors()},
                     values={"name": name, "role": role}, status=422)
    key, secret, approval = approved_keys.create_key_or_request(user.db, body.name, body.role, user.session.actor,
                                                                settings)
    return _keys(request, user, created={"key": KeyOut.of(key), "secret": secret,
                                         "approval_id": approval.id if approval else None})


@router.post("/keys/{key_id}/revoke", name="console-revoke-key")
def revoke_key(user: AdminForm, key_id: Annotated[str, Path(pattern=KEY_ID_PATTERN)]) -> Response:
    with actions.reported(user, "Revoke"):
        key = approved_keys.revoke_key(user.db, key_id, user.session.actor)
        actions.flash(user, f"Key {key.name!r} ({key.id}) is revoked")
    return actions.back("/keys")


def _keys(request: Request, user: User, errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
          created: dict[str, object] | None = None, status: int = 200) -> Response:
    return render(request, "keys.html", user, status_code=status, keys=[KeyOut.of(k) for k in keys.list_keys(user.db)],
                  roles=[r.value for r in reversed(Role)], errors=errors or {}, created=created,
                  values=values or {"role": Role.GENERATOR.value})  # the least privilege unless chosen
