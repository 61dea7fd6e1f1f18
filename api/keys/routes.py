"""Admin only: API keys (create, list, revoke)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from api.auth import ActorDep, require
from api.deps import SessionDep, SettingsDep
from api.keys.schemas import KeyCreate, KeyCreated, KeyList, KeyOut
from api.openapi import problems
from service.approvals import keys as approved_keys
from service.keys import service as keys
from service.keys.contract import KEY_ID_PATTERN, Role

router = APIRouter(tags=["keys"], dependencies=[Depends(require(Role.ADMIN))], responses=problems(401, 403))

KeyId = Annotated[str, Path(pattern=KEY_ID_PATTERN)]


@router.post("/keys", name="create", status_code=201, response_model=KeyCreated, responses={
    202: {"model": KeyCreated, "description": "ZERASE_DEPLOY_APPROVALS=1 and an admin key: made, but refused until "
                                              "a different admin approves `approval_id` (`Location`)"},
    **problems(422)})
def create_key(body: KeyCreate, db: SessionDep, actor: ActorDep, settings: SettingsDep) -> KeyCreated | JSONResponse:
    """A new key; its secret is in this response only."""
    key, secret, request = approved_keys.create_key_or_request(db, body.name, body.role, actor, settings)
    created = KeyCreated(**KeyOut.of(key).model_dump(), secret=secret, approval_id=request.id if request else None)
    if request is None:
        return created
    return JSONResponse(created.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"/approvals/{request.id}"})


@router.get("/keys", name="list", response_model=KeyList)
def list_keys(db: SessionDep) -> KeyList:
    return KeyList(data=[KeyOut.of(k) for k in keys.list_keys(db)])


@router.post("/keys/{id}/revoke", name="revoke", response_model=KeyOut, responses=problems(404, 409, 422))
def revoke_key(id: KeyId, db: SessionDep, actor: ActorDep) -> KeyOut:  # noqa: A002 (the path's name)
    """From the next request on, the key is refused; its pending approval requests are cancelled."""
    return KeyOut.of(approved_keys.revoke_key(db, id, actor))
