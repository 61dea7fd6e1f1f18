"""The keys HTTP contract: a new key's body and the key shapes (the secret only on creation)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.fields import Text
from service.keys.contract import Role
from service.keys.models import ApiKey


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "trust-and-safety", "role": "moderator"}]})

    name: Text = Field(description="Who holds the key; recorded as the actor of every action")
    role: Role


class KeyOut(BaseModel):
    id: str
    object: Literal["api_key"] = "api_key"
    name: str
    role: Role
    prefix: str = Field(description="The secret's first characters, to recognise it by")
    created_by: str | None
    created_by_key_id: str | None = Field(description="The key that made this one (null: the command line)")
    pending_approval: bool = Field(description="An admin key made under four-eyes approval: refused until a "
                                               "different admin approves it")
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyOut:
        return cls(id=key.id, name=key.name, role=Role(key.role), prefix=key.prefix,
                   created_by=key.created_by, created_by_key_id=key.created_by_key_id,
                   pending_approval=key.pending_approval, created_at=key.created_at, last_used_at=key.last_used_at,
                   revoked_at=key.revoked_at)


class KeyCreated(KeyOut):
    secret: str = Field(description="The key itself: shown this once, stored only as its sha256")
    approval_id: str | None = Field(None, description="With approvals on, an admin key waits for this request "
                                                      "(`/approvals/{id}`); it is refused until approved")


class KeyList(BaseModel):
    object: Literal["list"] = "list"
    data: list[KeyOut]
