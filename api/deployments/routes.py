"""/deployments: versioned sets of erasures served by /generate; activate one to roll back or forward."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path

from api.auth import ActorDep, require
from api.deps import SessionDep
from api.schemas import ActiveOut, DeploymentCreate, DeploymentList, DeploymentOut
from service import deployments
from service.models import Role

router = APIRouter(tags=["deployments"], dependencies=[Depends(require(Role.MODERATOR))])

Version = Annotated[int, Path(ge=0, le=2**31 - 1, description="0 activates the base model")]
ErasurePath = Annotated[str, Path(pattern=r"^er_[0-9a-f]{32}$")]
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"description": "An erasure has not succeeded, or the change is already in place"}}


@router.post("/deployments", status_code=201, response_model=DeploymentOut, responses=CONFLICT)
def create_deployment(body: DeploymentCreate, db: SessionDep, actor: ActorDep) -> DeploymentOut:
    """A new version (not activated): the erasures listed, with their artifacts as they are now."""
    deployment = deployments.create(db, body.erasure_ids, body.weights, actor=actor, reason=body.reason)
    db.commit()
    return DeploymentOut.of(deployment, deployments.active_row(db).version)


@router.get("/deployments", response_model=DeploymentList)
def list_deployments(db: SessionDep) -> DeploymentList:
    """Every version, newest first."""
    active_version = deployments.active_row(db).version
    return DeploymentList(data=[DeploymentOut.of(d, active_version) for d in deployments.history(db)])


@router.get("/deployments/active", response_model=ActiveOut)
def get_active(db: SessionDep) -> ActiveOut:
    return _active(db)


@router.post("/deployments/{version}/activate", response_model=ActiveOut)
def activate(version: Version, db: SessionDep, actor: ActorDep) -> ActiveOut:
    """Serve this version from the next /generate request on; no new version is made."""
    deployments.activate(db, version, actor)
    return _active(db)


@router.post("/erasures/{id}/deploy", status_code=201, response_model=ActiveOut, responses=CONFLICT,
             tags=["erasures"])
def deploy(id: ErasurePath, db: SessionDep, actor: ActorDep) -> ActiveOut:  # noqa: A002 (the path's name)
    """A new version = the active set + this erasure, activated."""
    deployments.deploy_erasure(db, id, actor)
    return _active(db)


@router.post("/erasures/{id}/retire", status_code=201, response_model=ActiveOut, responses=CONFLICT,
             tags=["erasures"])
def retire(id: ErasurePath, db: SessionDep, actor: ActorDep) -> ActiveOut:  # noqa: A002
    """A new version = the active set - this erasure, activated."""
    deployments.retire_erasure(db, id, actor)
    return _active(db)


def _active(db: SessionDep) -> ActiveOut:
    row = deployments.active_row(db)
    deployment = deployments.active(db)
    return ActiveOut(version=row.version or deployments.BASE_VERSION,
                     deployment=DeploymentOut.of(deployment, row.version) if deployment else None,
                     activated_by=row.activated_by, activated_at=row.activated_at)
