"""The approvals domain's facts, declared once: what a request asks for, its states, its id."""

from __future__ import annotations

import enum


class ApprovalAction(enum.StrEnum):
    DEPLOY = "deploy"  # the active set + an erasure
    RETIRE = "retire"  # the active set - an erasure
    ACTIVATE = "activate"  # serve a version (rollback, roll forward, 0: the base model)
    CREATE_KEY = "create_key"  # admit a new admin key (made pending, refused until approved)


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"  # and the action ran: `deployment_version` says what it made or activated
    REJECTED = "rejected"
    FAILED = "failed"  # approved, but the action itself was refused (the deploy gate, a conflict): `failure`
    CANCELLED = "cancelled"  # its requester's key was revoked before anyone decided


APPROVAL_ID_PATTERN = r"^apr_[0-9a-f]{16}$"
MAX_APPROVAL_LIST = 200
