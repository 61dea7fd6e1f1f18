"""The approvals domain's table: deploys, retires and activations waiting for a second key."""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, CheckConstraint, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from service.approvals.contract import ApprovalAction, ApprovalStatus
from service.core.tables import Base, UTCDateTime, check_in, utcnow

ONE_TARGET = ("(CASE WHEN erasure_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN version IS NULL THEN 0 ELSE 1 END)"
              " + (CASE WHEN key_id IS NULL THEN 0 ELSE 1 END) = 1")


def new_approval_id() -> str:
    return f"apr_{secrets.token_hex(8)}"


class ApprovalRequest(Base):
    """One key asks, a different one decides; the action runs, as the approver, when it is approved."""

    __tablename__ = "approval_request"
    __table_args__ = (CheckConstraint(check_in("action", ApprovalAction), name="action"),
                      CheckConstraint(check_in("status", ApprovalStatus), name="status"),
                      # deploy and retire name an erasure, activate a version, create_key a key: exactly one
                      CheckConstraint(ONE_TARGET, name="one_target"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True, default=new_approval_id)
    action: Mapped[str] = mapped_column(String(16))
    erasure_id: Mapped[str | None] = mapped_column(String(40))
    version: Mapped[int | None] = mapped_column(Integer)  # no foreign key: 0, the base model, is no row
    key_id: Mapped[str | None] = mapped_column(String(40))  # create_key: the pending admin key
    force: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    reason: Mapped[str | None] = mapped_column(Text)
    # The requester by key name and id: the approver must differ in both (a new key under the same name too).
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_key_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(16), index=True, default=ApprovalStatus.PENDING)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_key_id: Mapped[str | None] = mapped_column(String(40))
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    comment: Mapped[str | None] = mapped_column(Text)
    deployment_version: Mapped[int | None] = mapped_column(Integer)  # what the approved action made or activated
    failure: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {code, detail, field, ...}: why it was refused
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    @property
    def target(self) -> str:
        """The erasure id, `deployment:<version>` or the key id (as the audit log names them)."""
        if self.key_id is not None:
            return self.key_id
        return self.erasure_id if self.erasure_id is not None else f"deployment:{self.version}"
