"""Admin only: the audit log of moderation actions, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from api.audit.schemas import AuditList, AuditOut
from api.auth import require
from api.deps import SessionDep
from api.openapi import problems
from service.audit import service as audit
from service.audit.contract import AUDIT_CURSOR_PATTERN, MAX_ACTION, MAX_ACTOR, MAX_TARGET
from service.core.text import PLAIN_PARAMETER
from service.keys.contract import Role

router = APIRouter(tags=["audit"], dependencies=[Depends(require(Role.ADMIN))], responses=problems(401, 403))


def _filter(max_length: int, description: str) -> Any:
    return Query(max_length=max_length, pattern=PLAIN_PARAMETER, description=description)


@router.get("/audit", name="list", response_model=AuditList, responses=problems(422))
def list_audit(db: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 50,
               cursor: Annotated[str | None, Query(pattern=AUDIT_CURSOR_PATTERN)] = None,
               action: Annotated[str | None, _filter(MAX_ACTION, "e.g. erasure.submit")] = None,
               actor: Annotated[str | None, _filter(MAX_ACTOR, "A key's name")] = None,
               target: Annotated[str | None, _filter(MAX_TARGET, "An erasure id, deployment:N, a key id")] = None,
               ) -> AuditList:
    """Every moderation action, newest first."""
    page, has_more = audit.list_events(db, limit=limit, cursor=int(cursor) if cursor else None, action=action,
                                       actor=actor, target=target)
    return AuditList(data=[AuditOut.of(e) for e in page], has_more=has_more,
                     next_cursor=str(page[-1].id) if has_more else None)
