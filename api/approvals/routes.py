"""/approvals: deploys, retires and activations waiting for a second key (ZERASE_DEPLOY_APPROVALS=1).

The requester's own key (or another key of the same name) can neither approve nor reject; `force` requests
need an admin approver.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import JSONResponse

from api.approvals.schemas import ApprovalDecision, ApprovalList, ApprovalOut
from api.auth import ActorDep, require
from api.deps import SessionDep, SettingsDep
from api.openapi import problems
from service.approvals import service as approvals
from service.approvals.contract import APPROVAL_ID_PATTERN, MAX_APPROVAL_LIST, ApprovalStatus
from service.approvals.models import ApprovalRequest
from service.keys.contract import Role

router = APIRouter(tags=["approvals"], dependencies=[Depends(require(Role.MODERATOR))],
                   responses=problems(401, 403))

ApprovalId = Annotated[str, Path(pattern=APPROVAL_ID_PATTERN, description="An approval request id, apr_...")]

# What deploy, retire and activate answer instead of acting, when approvals are on.
AWAITING_APPROVAL: dict[int | str, dict[str, Any]] = {202: {
    "model": ApprovalOut,
    "description": "ZERASE_DEPLOY_APPROVALS=1: nothing changed yet; a pending approval request (`Location: "
                   "/approvals/{id}`) that a different moderator or admin key approves"}}


def accepted(request: ApprovalRequest) -> JSONResponse:
    return JSONResponse(ApprovalOut.of(request).model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/approvals/{request.id}"})


@router.get("/approvals", name="list", response_model=ApprovalList, responses=problems(422))
def list_approvals(db: SessionDep, status: ApprovalStatus | None = None,
                   limit: Annotated[int, Query(ge=1, le=MAX_APPROVAL_LIST)] = 50) -> ApprovalList:
    """Newest first; `status=pending` is what waits for a decision."""
    return ApprovalList(data=[ApprovalOut.of(r) for r in approvals.list_requests(db, status, limit)])


@router.get("/approvals/{id}", name="get", response_model=ApprovalOut, responses=problems(404, 422))
def get_approval(id: ApprovalId, db: SessionDep) -> ApprovalOut:  # noqa: A002 (the path's name)
    return ApprovalOut.of(approvals.get_request(db, id))


@router.post("/approvals/{id}/approve", name="approve", response_model=ApprovalOut,
             responses=problems(403, 404, 409, 422))
def approve(id: ApprovalId, db: SessionDep, actor: ActorDep, settings: SettingsDep,  # noqa: A002
            body: ApprovalDecision | None = None) -> ApprovalOut:
    """Run the requested action now, as this key (the deploy gate judges it again). `status` says how it went:
    `approved` (`deployment_version`), or `failed` when the action was refused (`failure`). 403 `own_request`
    for the requester's key; 409 once decided."""
    return ApprovalOut.of(approvals.approve(db, id, actor, settings, body.comment if body else None))


@router.post("/approvals/{id}/reject", name="reject", response_model=ApprovalOut,
             responses=problems(403, 404, 409, 422))
def reject(id: ApprovalId, db: SessionDep, actor: ActorDep,  # noqa: A002
           body: ApprovalDecision | None = None) -> ApprovalOut:
    """Nothing changes. 403 `own_request` for the requester's key; 409 once decided."""
    return ApprovalOut.of(approvals.reject(db, id, actor, body.comment if body else None))
