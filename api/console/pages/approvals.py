"""Four-eyes approvals (ZERASE_DEPLOY_APPROVALS=1): pending deploys and activations, approved or rejected by
a different moderator or admin. The buttons are hidden on one's own requests; the service refuses anyway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response

from api.console import actions
from api.console.render import render
from api.console.session import FormOf, Page, User
from api.deps import SettingsDep
from service.approvals import service as approvals
from service.approvals.contract import APPROVAL_ID_PATTERN, ApprovalStatus
from service.keys.contract import Role

router = APIRouter()
Moderator = Annotated[User, Depends(Page(Role.MODERATOR))]
ModeratorForm = Annotated[User, Depends(FormOf(Role.MODERATOR))]
ApprovalId = Annotated[str, Path(pattern=APPROVAL_ID_PATTERN)]


@router.get("/approvals", name="console-approvals")
def approvals_page(request: Request, user: Moderator, settings: SettingsDep) -> Response:
    every = approvals.list_requests(user.db, limit=100)
    return render(request, "approvals.html", user, enabled=settings.deploy_approvals,
                  pending=[r for r in every if r.status == ApprovalStatus.PENDING],
                  decided=[r for r in every if r.status != ApprovalStatus.PENDING])


@router.post("/approvals/{approval_id}/approve", name="console-approve")
def approve(user: ModeratorForm, settings: SettingsDep, approval_id: ApprovalId,
            comment: Annotated[str, Form(max_length=1000)] = "") -> Response:
    with actions.reported(user, "Approval"):
        decided = approvals.approve(user.db, approval_id, user.session.actor, settings, comment or None)
        if decided.status == ApprovalStatus.APPROVED:
            actions.flash(user, f"Approved {approval_id}: version {decided.deployment_version} is active")
        else:
            detail = (decided.failure or {}).get("detail", "refused")
            actions.flash(user, f"Approved {approval_id}, but the action was refused: {detail}")
    return actions.back("/approvals")


@router.post("/approvals/{approval_id}/reject", name="console-reject")
def reject(user: ModeratorForm, approval_id: ApprovalId,
           comment: Annotated[str, Form(max_length=1000)] = "") -> Response:
    with actions.reported(user, "Rejection"):
        approvals.reject(user.db, approval_id, user.session.actor, comment or None)
        actions.flash(user, f"Rejected {approval_id}")
    return actions.back("/approvals")
