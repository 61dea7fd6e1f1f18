"""Four-eyes approvals (ZERASE_DEPLOY_APPROVALS=1): pending deploys and activations, approved or rejected by
a different moderator or admin. The buttons are hidden on one's own requests; the service refuses anyway."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Path, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from api.approvals.schemas import ApprovalDecision
from api.console import actions
from api.console.render import render
from api.console.session import FormOf, Page, User
from api.deps import SettingsDep
from service.approvals import service as approvals
from service.approvals.contract import APPROVAL_ID_PATTERN, ApprovalStatus
from service.approvals.models import ApprovalRequest
from service.core.settings import Settings
from service.keys.contract import Role

router = APIRouter()
Moderator = Annotated[User, Depends(Page(Role.MODERATOR))]
ModeratorForm = Annotated[User, Depends(FormOf(Role.MODERATOR))]
ApprovalId = Annotated[str, Path(pattern=APPROVAL_ID_PATTERN)]
DECIDED_SHOWN = 50  # the recent decisions; pending requests are all shown, however many


@router.get("/approvals", name="console-approvals")
def approvals_page(request: Request, user: Moderator, settings: SettingsDep) -> Response:
    return _page(request, user, settings)


@router.post("/approvals/{approval_id}/approve", name="console-approve")
def approve(request: Request, user: ModeratorForm, settings: SettingsDep, approval_id: ApprovalId,
            comment: Annotated[str, Form()] = "") -> Response:
    decision = _decision(comment)
    if isinstance(decision, str):
        return _page(request, user, settings, {approval_id: decision}, 422)
    with actions.reported(user, "Approval"):
        decided = approvals.approve(user.db, approval_id, user.session.actor, settings, decision.comment)
        if decided.status == ApprovalStatus.APPROVED:
            actions.flash(user, f"Approved {approval_id}: version {decided.deployment_version} is active")
        else:
            detail = (decided.failure or {}).get("detail", "refused")
            actions.flash(user, f"Approved {approval_id}, but the action was refused: {detail}")
    return actions.back("/approvals")


@router.post("/approvals/{approval_id}/reject", name="console-reject")
def reject(request: Request, user: ModeratorForm, settings: SettingsDep, approval_id: ApprovalId,
           comment: Annotated[str, Form()] = "") -> Response:
    decision = _decision(comment)
    if isinstance(decision, str):
        return _page(request, user, settings, {approval_id: decision}, 422)
    with actions.reported(user, "Rejection"):
        approvals.reject(user.db, approval_id, user.session.actor, decision.comment)
        actions.flash(user, f"Rejected {approval_id}")
    return actions.back("/approvals")


def _decision(comment: str) -> ApprovalDecision | str:
    """The comment checked as the API checks it (length, no invisible characters), or why it is refused."""
    try:
        return ApprovalDecision.model_validate({"comment": comment if comment.strip() else None})
    except ValidationError as exc:
        return "; ".join(f"comment: {e['msg']}" for e in exc.errors())


def _page(request: Request, user: User, settings: Settings, errors: dict[str, str] | None = None,
          status: int = 200) -> Response:
    return render(request, "approvals.html", user, status_code=status, enabled=settings.deploy_approvals,
                  pending=_pending(user.db), decided=_decided(user.db), decided_shown=DECIDED_SHOWN,
                  errors=errors or {})


def _pending(db: Session) -> list[ApprovalRequest]:
    """Every pending request, oldest first: no number of decided ones may crowd one out of the page."""
    query = select(ApprovalRequest).where(ApprovalRequest.status == ApprovalStatus.PENDING)
    return list(db.scalars(query.order_by(ApprovalRequest.created_at, ApprovalRequest.id)))


def _decided(db: Session) -> list[ApprovalRequest]:
    """The most recently decided requests (a history; the API's list has them all)."""
    query = select(ApprovalRequest).where(ApprovalRequest.status != ApprovalStatus.PENDING)
    return list(db.scalars(query.order_by(ApprovalRequest.decided_at.desc().nulls_last(), ApprovalRequest.id.desc())
                           .limit(DECIDED_SHOWN)))
