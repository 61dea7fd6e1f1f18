"""API keys, the audit log, and each erasure job's evaluation and preview

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)
EVENT_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "api_key",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("secret_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("last_used_at", UTC_TIME, nullable=True),
        sa.Column("revoked_at", UTC_TIME, nullable=True),
        sa.CheckConstraint("role IN ('admin', 'moderator', 'generator')", name=op.f("ck_api_key_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_key")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_api_key_secret_sha256")),
    )
    op.create_table(
        "audit_event",
        sa.Column("id", EVENT_ID, autoincrement=True, nullable=False),
        sa.Column("at", UTC_TIME, nullable=False),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("key_id", sa.String(length=40), nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=200), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index(op.f("ix_audit_event_action"), "audit_event", ["action"])
    op.create_index(op.f("ix_audit_event_target"), "audit_event", ["target"])
    with op.batch_alter_table("erasure_job") as batch_op:
        batch_op.add_column(sa.Column("evaluation", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("preview_uri", sa.String(length=1024), nullable=True))
        batch_op.add_column(sa.Column("preview_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("erasure_job") as batch_op:
        batch_op.drop_column("preview_sha256")
        batch_op.drop_column("preview_uri")
        batch_op.drop_column("evaluation")
    op.drop_index(op.f("ix_audit_event_target"), table_name="audit_event")
    op.drop_index(op.f("ix_audit_event_action"), table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_table("api_key")
