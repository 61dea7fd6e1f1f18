"""/deployments: versioned sets of erasures served by /generate; activate one to roll back or forward."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from api.approvals.routes import accepted
from api.approvals.schemas import ApprovalOut
from api.auth import ActorDep, require
from api.deployments.schemas import (
    ActiveOut,
    ChangeRequest,
    DeploymentCreate,
    DeploymentEvaluation,
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
from service.deployments.gate import GatePolicy, served_misses
from service.deployments.models import Deployment
from service.erasures.contract import ERASURE_ID_PATTERN
from service.keys.contract import Role

router = APIRouter(tags=["deployments"], dependencies=[Depends(require(Role.MODERATOR))],
                   responses=problems(401, 403))

Version = Annotated[int, Path(ge=BASE_VERSION, le=MAX_VERSION, description="0 activates the base model")]
PositiveVersion = Annotated[int, Path(ge=1, le=MAX_VERSION)]

# What deploy, retire and activate answer instead of acting.
AWAITING: dict[int | str, dict[str, Any]] = {202: {
    "model": ApprovalOut | DeploymentOut,
    "description": "Nothing served changed yet: with ZERASE_DEPLOY_APPROVALS=1 a pending approval request "
                   "(`Location: /approvals/{id}`); or the new version, waiting to be judged as served "
                   "(`Location: /deployments/{v}`, `pending_activation`), activated by a worker if it passes"}}
ErasurePath = Annotated[str, Path(pattern=ERASURE_ID_PATTERN)]


@router.post("/deployments", name="create", status_code=201, response_model=DeploymentOut,
             responses=problems(403, 409, 422))
def create_deployment(body: DeploymentCreate, db: SessionDep, actor: ActorDep, settings: SettingsDep) -> DeploymentOut:
    """A new version (not activated): the erasures listed, with their artifacts as they are now. Each must
    pass the deploy gate (409 `deploy_gate` naming the metric), unless an admin forces it; a set of several
    (or a weight ≠ 1) is queued to be judged as served (`evaluation_status`)."""
    deployment = deployments.create(db, body.erasure_ids, body.weights, actor=actor, reason=body.reason,
                                    gate=GatePolicy.of(settings), force=body.force, fusion=settings.fusion)
    return DeploymentOut.of(deployment, deployments.active_row(db).version)


@router.get("/deployments", name="list", response_model=DeploymentList)
def list_deployments(db: SessionDep) -> DeploymentList:
    """Every version, newest first."""
    active_version = deployments.active_row(db).version
    return DeploymentList(data=[DeploymentOut.of(d, active_version) for d in deployments.history(db)])


@router.get("/deployments/active", name="get-active", response_model=ActiveOut)
def get_active(db: SessionDep) -> ActiveOut:
    return _active(db)


@router.get("/deployments/{version}", name="get", response_model=DeploymentOut, responses=problems(404, 422))
def get_deployment(version: PositiveVersion, db: SessionDep) -> DeploymentOut:
    return DeploymentOut.of(deployments.get(db, version), deployments.active_row(db).version)


@router.get("/deployments/{version}/evaluation", name="get-evaluation", response_model=DeploymentEvaluation,
            responses=problems(404, 409, 422))
def get_evaluation(version: PositiveVersion, db: SessionDep, settings: SettingsDep) -> DeploymentEvaluation:
    """The version's set judged as served: each erased concept under the combined patch, the kept concepts
    against the base model, and the gate's verdict under the current policy. 409 when it was never asked for."""
    deployment = deployments.get(db, version)
    if deployment.evaluation_status is None:
        raise deployments.DeploymentConflict(f"version {version} has no evaluation as served (a single erasure at "
                                             "weight 1 is judged by its job's; POST …/evaluate asks for one)",
                                             "version", "path")
    gate = GatePolicy.of(settings) or GatePolicy(1.0, 1.0, 1.0)
    missed = (served_misses(gate, version, deployment.evaluation, {e["erasure_id"]: e["erasure_id"]
                                                                   for e in deployment.entries})
              if deployment.evaluation_status in ("evaluated", "failed") else [])
    return DeploymentEvaluation(version=version, status=deployment.evaluation_status,  # type: ignore[arg-type]
                                evaluation=deployment.evaluation, gate=[m.to_dict() for m in missed])


@router.post("/deployments/{version}/evaluate", name="evaluate", status_code=202, response_model=DeploymentOut,
             responses=problems(404, 409, 422))
def evaluate(version: PositiveVersion, db: SessionDep, actor: ActorDep) -> JSONResponse:
    """Judge this version as served (again): queued for a worker; `GET /deployments/{v}/evaluation` has it."""
    deployment = deployments.request_evaluation(db, version, actor)
    return _waiting(db, deployment)


@router.post("/deployments/{version}/activate", name="activate", response_model=ActiveOut,
             responses={**AWAITING, **problems(403, 404, 409, 422)})
def activate(version: Version, db: SessionDep, actor: ActorDep, settings: SettingsDep,
             body: ChangeRequest | None = None) -> ActiveOut | JSONResponse:
    """Serve this version from the next /generate request on, if it passes the deploy gate as served (409
    `deploy_gate`; an admin may force it, audited); no new version is made. With approvals on, 202: a pending
    request for it (409 if one already waits)."""
    result = approvals.activate_or_request(db, version, actor, settings, force=bool(body and body.force),
                                           reason=body.reason if body else None)
    return _outcome(db, result)


@router.post("/erasures/{id}/deploy", name="deploy", status_code=201, response_model=ActiveOut,
             responses={**AWAITING, **problems(403, 404, 409, 422)}, tags=["erasures"])
def deploy(id: ErasurePath, db: SessionDep, actor: ActorDep, settings: SettingsDep,  # noqa: A002 (the path's name)
           body: DeployRequest | None = None) -> ActiveOut | JSONResponse:
    """A new version = the active set + this erasure, activated, if it passes the deploy gate (409
    `deploy_gate` naming the metric and its value otherwise; an admin may force it). With approvals on, 202:
    a pending request for it, if the gate passes now (it judges again on approval). A set that must first be judged
    as served (several erasures): 202 with the version, queued for a worker, which activates it if the gate passes
    it and the active set has not changed meanwhile (`GET /deployments/{v}`: `pending_activation`, `refusal`)."""
    result = approvals.deploy_or_request(db, id, actor, settings, force=bool(body and body.force),
                                         reason=body.reason if body else None)
    return _outcome(db, result)


@router.post("/erasures/{id}/retire", name="retire", status_code=201, response_model=ActiveOut,
             responses={**AWAITING, **problems(403, 409, 422)}, tags=["erasures"])
def retire(id: ErasurePath, db: SessionDep, actor: ActorDep, settings: SettingsDep,  # noqa: A002
           body: ChangeRequest | None = None) -> ActiveOut | JSONResponse:
    """A new version = the active set - this erasure, activated. With approvals on, 202: a pending request for it."""
    result = approvals.retire_or_request(db, id, actor, settings, force=bool(body and body.force),
                                         reason=body.reason if body else None)
    return _outcome(db, result)


def _outcome(db: SessionDep, result: Deployment | ApprovalRequest | None) -> ActiveOut | JSONResponse:
    """The active version; 202 with the approval request, or with the version while it waits to be judged."""
    if isinstance(result, ApprovalRequest):
        return accepted(result)
    if result is not None and result.pending_activation:
        return _waiting(db, result)
    return _active(db)


def _waiting(db: SessionDep, deployment: Deployment) -> JSONResponse:
    body = DeploymentOut.of(deployment, deployments.active_row(db).version).model_dump(mode="json")
    return JSONResponse(body, status_code=202, headers={"Location": f"/deployments/{deployment.version}"})


def _active(db: SessionDep) -> ActiveOut:
    row = deployments.active_row(db)
    deployment = deployments.active(db)
    return ActiveOut(version=row.version or BASE_VERSION,
                     deployment=DeploymentOut.of(deployment, row.version) if deployment else None,
                     activated_by=row.activated_by, activated_at=row.activated_at)
