"""The approvals HTTP contract: a decision's body, one approval request and the list of them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.fields import Reason
from service.approvals.contract import ApprovalAction, ApprovalStatus
from service.approvals.models import ApprovalRequest


class ApprovalDecision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    comment: Reason | None = None


class ApprovalOut(BaseModel):
    id: str
    object: Literal["approval_request"] = "approval_request"
    url: str
    action: ApprovalAction
    erasure_id: str | None = Field(description="deploy and retire: the erasure")
    version: int | None = Field(description="activate: the version to serve (0: the base model)")
    key_id: str | None = Field(None, description="create_key: the new admin key, refused until approved")
    force: bool = Field(description="past the deploy gate: asked by an admin, approvable by an admin only")
    reason: str | None
    status: ApprovalStatus
    requested_by: str = Field(description="The requesting key's name (auto-deploy: the job's key)")
    requested_key_id: str | None
    created_at: datetime
    decided_by: str | None
    decided_key_id: str | None
    decided_at: datetime | None
    comment: str | None
    deployment_version: int | None = Field(description="approved: the version the action made or activated")
    failure: dict[str, Any] | None = Field(description="failed: why the approved action was refused (`code`, "
                                                        "`detail`, `field`; the deploy gate adds `gate`)")

    @classmethod
    def of(cls, request: ApprovalRequest) -> ApprovalOut:
        return cls(id=request.id, url=f"/approvals/{request.id}", action=ApprovalAction(request.action),
                   erasure_id=request.erasure_id, version=request.version, key_id=request.key_id,
                   force=request.force,
                   reason=request.reason, status=ApprovalStatus(request.status), requested_by=request.requested_by,
                   requested_key_id=request.requested_key_id, created_at=request.created_at,
                   decided_by=request.decided_by, decided_key_id=request.decided_key_id,
                   decided_at=request.decided_at, comment=request.comment,
                   deployment_version=request.deployment_version, failure=request.failure)


class ApprovalList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ApprovalOut]
