"""Admin only: API keys (create, list, revoke) and the audit log of moderation actions."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from api.auth import ActorDep, require
from api.deps import SessionDep
from api.schemas import AuditList, AuditOut, KeyCreate, KeyCreated, KeyList, KeyOut
from service import audit, keys
from service.models import Role

router = APIRouter(tags=["admin"], dependencies=[Depends(require(Role.ADMIN))])

KeyId = Annotated[str, Path(pattern=r"^key_[0-9a-f]{16}$")]


@router.post("/keys", status_code=201, response_model=KeyCreated)
def create_key(body: KeyCreate, db: SessionDep, actor: ActorDep) -> KeyCreated:
    """A new key; its secret is in this response only."""
    key, secret = keys.create_key(db, body.name, body.role, actor)
    db.commit()
    return KeyCreated(**KeyOut.of(key).model_dump(), secret=secret)


@router.get("/keys", response_model=KeyList)
def list_keys(db: SessionDep) -> KeyList:
    return KeyList(data=[KeyOut.of(k) for k in keys.list_keys(db)])


@router.post("/keys/{id}/revoke", response_model=KeyOut, responses={
    404: {"description": "No such key"}, 409: {"description": "Already revoked, or the last admin key"}})
def revoke_key(id: KeyId, db: SessionDep, actor: ActorDep) -> KeyOut:  # noqa: A002 (the path's name)
    """From the next request on, the key is refused."""
    return KeyOut.of(keys.revoke(db, id, actor))


@router.get("/audit", response_model=AuditList)
def list_audit(db: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50,
               cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
               action: Annotated[str | None, Query(max_length=64, description="e.g. erasure.submit")] = None,
               actor: Annotated[str | None, Query(max_length=200, description="A key's name")] = None,
               target: Annotated[str | None, Query(max_length=200, description="An erasure id, deployment:N, "
                                                                               "a key id")] = None) -> AuditList:
    """Every moderation action, newest first."""
    page, has_more = audit.list_events(db, limit=limit, cursor=int(cursor) if cursor else None, action=action,
                                       actor=actor, target=target)
    return AuditList(data=[AuditOut.of(e) for e in page], has_more=has_more,
                     next_cursor=str(page[-1].id) if has_more else None)
