"""Deployments: the active version, the history, what changed between two versions, and activation
(rollback or roll forward) after a confirmation page."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from api.console import actions
from api.console.render import render
from api.console.session import FormOf, Page, User
from api.deps import SettingsDep
from service.deployments import service as deployments
from service.deployments.contract import BASE_VERSION, MAX_VERSION
from service.deployments.models import Deployment
from service.erasures.contract import ERASURE_ID_PATTERN
from service.keys.contract import Role

router = APIRouter()
Moderator = Annotated[User, Depends(Page(Role.MODERATOR))]
ModeratorForm = Annotated[User, Depends(FormOf(Role.MODERATOR))]
Version = Annotated[int, Path(ge=BASE_VERSION, le=MAX_VERSION)]
VersionQuery = Annotated[int | None, Query(ge=BASE_VERSION, le=MAX_VERSION)]


@router.get("/deployments", name="console-deployments")
def deployments_page(request: Request, user: Moderator, settings: SettingsDep, a: VersionQuery = None,
                     b: VersionQuery = None) -> Response:
    row = deployments.active_row(user.db)
    active = row.version or BASE_VERSION
    history = deployments.history(user.db)
    compared = None
    if a is not None and b is not None:
        with actions.reported(user, "Compare"):
            compared = {"a": a, "b": b, **deployments.changes(user.db, a, b)}
    return render(request, "deployments.html", user, active=active, row=row, history=history, compared=compared,
                  approvals=settings.deploy_approvals, pair=(a, b) if compared else _default_pair(history, active))


def _default_pair(history: list[Deployment], active: int) -> tuple[int, int]:
    """What Compare starts from: the version before the active one, then the active one (the base model serving:
    the newest version, then the one before it), never the same version twice."""
    versions = [d.version for d in history] + [BASE_VERSION]  # newest first
    b = active if active != BASE_VERSION or len(versions) == 1 else versions[0]
    older = [v for v in versions if v < b]
    return (older[0] if older else BASE_VERSION), b


@router.get("/deployments/{version}/activate", name="console-activate-confirm")
def confirm_activation(request: Request, user: Moderator, settings: SettingsDep, version: Version) -> Response:
    """Activation is confirmed on a page of its own, which shows what it changes."""
    active = deployments.active_row(user.db).version or BASE_VERSION
    deployment = deployments.get(user.db, version) if version != BASE_VERSION else None
    return render(request, "activate.html", user, version=version, active=active, deployment=deployment,
                  changes=deployments.changes(user.db, active, version), approvals=settings.deploy_approvals)


@router.post("/deployments/{version}/activate", name="console-activate")
def activate(user: ModeratorForm, settings: SettingsDep, version: Version) -> Response:
    with actions.reported(user, "Activation"):
        actions.flash(user, actions.activate(user, settings, version))
    return actions.back("/deployments")


@router.post("/erasures/{job_id}/retire", name="console-retire")
def retire(user: ModeratorForm, settings: SettingsDep, job_id: Annotated[str, Path(pattern=ERASURE_ID_PATTERN)]
           ) -> Response:
    with actions.reported(user, "Retire"):
        actions.flash(user, actions.retire(user, settings, job_id))
    return actions.back("/deployments")
