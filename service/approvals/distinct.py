"""Who counts as a different person for four-eyes: not the requester's key, not a key under the requester's name
(compared as `person`: casefolded, NFKC, spaces collapsed), and not a key the requester made, directly or through
keys made by keys they made. A key made on the command line, or by another admin, is a person of its own."""

from __future__ import annotations

from sqlalchemy.orm import Session

from service.approvals.models import ApprovalRequest
from service.audit.service import Actor
from service.keys import service as keys
from service.keys.contract import person
from service.keys.models import ApiKey


def not_distinct(db: Session, actor: Actor, request: ApprovalRequest) -> str | None:
    """Why `actor` is the requester in another guise, or None when it is somebody else."""
    if actor.key_id is not None and actor.key_id == request.requested_key_id:
        return "this is that key"
    requester = person(request.requested_by)
    if person(actor.name) == requester:
        return f"{actor.name!r} is the same name"
    key = db.get(ApiKey, actor.key_id) if actor.key_id else None
    if key is None:
        return None
    for maker in [key, *keys.makers(db, key)]:
        made_by_requester = (maker.created_by_key_id is not None
                             and maker.created_by_key_id == request.requested_key_id)
        # created_by is the maker's name; for keys made before makers were recorded it is all there is.
        if made_by_requester or (maker.created_by is not None and person(maker.created_by) == requester):
            return f"the key {actor.name!r} descends from a key the requester made"
    return None
