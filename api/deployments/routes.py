"""/deployments: versioned sets of erasures served by /generate; activate one to roll back or forward."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from api.approvals.routes import AWAITING_APPROVAL, accepted
from api.auth import ActorDep, require
from api.deployments.schemas import (
    ActiveOut,
    ChangeRequest,
    DeploymentCreate,
    DeploymentList,
    DeploymentOut,
    DeployRequest,
)
from api.deps import SessionDep, SettingsDep
from api.openapi import problems
from service.approvals import service as approvals
from service.approvals.models import ApprovalRequest
from service.deployments import service as deployments
from service.deployments.contract import BASE_VERSION, MAX_VERSION
from service.deployments.gate import GatePolicy
from service.erasures.contract import ERASURE_ID_PATTERN
from service.keys.contract import Role

router = APIRouter(tags=["deployments"], dependencies=[Depends(require(Role.MODERATOR))],
                   responses=problems(401, 403))

Version = Annotated[int, Path(ge=BASE_VERSION, le=MAX_VERSION, description="0 activates the base model")]
ErasurePath = Annotated[str, Path(pattern=ERASURE_ID_PATTERN)]


@router.post("/deployments", name="create", status_code=201, response_model=DeploymentOut,
             responses=problems(403, 409, 422))
def create_deployment(body: DeploymentCreate, db: SessionDep, actor: ActorDep, settings: SettingsDep) -> DeploymentOut:
    """A new version (not activated): the erasures listed, with their artifacts as they are now. Each must
    pass the deploy gate (409 `deploy_gate` naming the metric), unless an admin forces it."""
    deployment = deployments.create(db, body.erasure_ids, body.weights, actor=actor, reason=body.reason,
                                    gate=GatePolicy.of(settings), force=body.force)
    return DeploymentOut.of(deployment, deployments.active_row(db).version)


@router.get("/deployments", name="list", response_model=DeploymentList)
def list_deployments(db: SessionDep) -> DeploymentList:
    """Every version, newest first."""
    active_version = deployments.active_row(db).version
    return DeploymentList(data=[DeploymentOut.of(d, active_version) for d in deployments.history(db)])


@router.get("/deployments/active", name="get-active", response_model=ActiveOut)
def get_active(db: SessionDep) -> ActiveOut:
    return _active(db)


@router.post("/deployments/{version}/activate", name="activate", response_model=ActiveOut,
             responses={**AWAITING_APPROVAL, **problems(403, 404, 409, 422)})
def activate(version: Version, db: SessionDep, actor: ActorDep, settings: SettingsDep,
             body: ChangeRequest | None = None) -> ActiveOut | JSONResponse:
    """Serve this version from the next /generate request on, if it passes the deploy gate as served (409
    `deploy_gate`; an admin may force it, audited); no new version is made. With approvals on, 202: a pending
    request for it (409 if one already waits)."""
    result = approvals.activate_or_request(db, version, actor, settings, force=bool(body and body.force),
                                           reason=body.reason if body else None)
    return accepted(result) if isinstance(result, ApprovalRequest) else _active(db)


@router.post("/erasures/{id}/deploy", name="deploy", status_code=201, response_model=ActiveOut,
             responses={**AWAITING_APPROVAL, **problems(403, 404, 409, 422)}, tags=["erasures"])
def deploy(id: ErasurePath, db: SessionDep, actor: ActorDep, settings: SettingsDep,  # noqa: A002 (the path's name)
           body: DeployRequest | None = None) -> ActiveOut | JSONResponse:
    """A new version = the active set + this erasure, activated, if it passes the deploy gate (409
    `deploy_gate` naming the metric and its value otherwise; an admin may force it). With approvals on, 202:
    a pending request for it, if the gate passes now (it judges again on approval)."""
    result = approvals.deploy_or_request(db, id, actor, settings, force=bool(body and body.force),
                                         reason=body.reason if body else None)
    return accepted(result) if isinstance(result, ApprovalRequest) else _active(db)


@router.post("/erasures/{id}/retire", name="retire", status_code=201, response_model=ActiveOut,
             responses={**AWAITING_APPROVAL, **problems(403, 409, 422)}, tags=["erasures"])
def retire(id: ErasurePath, db: SessionDep, actor: ActorDep, settings: SettingsDep,  # noqa: A002
           body: ChangeRequest | None = None) -> ActiveOut | JSONResponse:
    """A new version = the active set - this erasure, activated. With approvals on, 202: a pending request for it."""
    result = approvals.retire_or_request(db, id, actor, settings, force=bool(body and body.force),
                                         reason=body.reason if body else None)
    return accepted(result) if isinstance(result, ApprovalRequest) else _active(db)


def _active(db: SessionDep) -> ActiveOut:
    row = deployments.active_row(db)
    deployment = deployments.active(db)
    return ActiveOut(version=row.version or BASE_VERSION,
                     deployment=DeploymentOut.of(deployment, row.version) if deployment else None,
                     activated_by=row.activated_by, activated_at=row.activated_at)
