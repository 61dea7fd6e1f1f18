"""Four-eyes approval requests for deploys, retires and activations

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "approval_request",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("erasure_id", sa.String(length=40), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("force", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_key_id", sa.String(length=40), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("decided_by", sa.String(length=200), nullable=True),
        sa.Column("decided_key_id", sa.String(length=40), nullable=True),
        sa.Column("decided_at", UTC_TIME, nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column("deployment_version", sa.Integer(), nullable=True),
        sa.Column("failure", sa.JSON(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.CheckConstraint("action IN ('deploy', 'retire', 'activate')", name=op.f("ck_approval_request_action")),
        sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'failed')",
                           name=op.f("ck_approval_request_status")),
        sa.CheckConstraint("(erasure_id IS NULL) <> (version IS NULL)", name=op.f("ck_approval_request_one_target")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval_request")),
    )
    op.create_index(op.f("ix_approval_request_status"), "approval_request", ["status"])
    op.create_index(op.f("ix_approval_request_created_at"), "approval_request", ["created_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_approval_request_created_at"), table_name="approval_request")
    op.drop_index(op.f("ix_approval_request_status"), table_name="approval_request")
    op.drop_table("approval_request")
