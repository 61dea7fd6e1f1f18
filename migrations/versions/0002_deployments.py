"""deployments of erasures, the active one, and erasure_job.auto_deploy

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deployment",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("entries", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_deployment")),
    )
    active = op.create_table(
        "active_deployment",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("activated_by", sa.String(length=200), nullable=True),
        sa.Column("activated_at", UTC_TIME, nullable=True),
        sa.CheckConstraint("id = 1", name=op.f("ck_active_deployment_singleton")),
        sa.ForeignKeyConstraint(["version"], ["deployment.version"],
                                name=op.f("fk_active_deployment_version_deployment")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_active_deployment")),
    )
    with op.batch_alter_table("erasure_job") as batch_op:
        batch_op.add_column(sa.Column("auto_deploy", sa.Boolean(), server_default=sa.false(), nullable=False))
    # The row exists from the start, so activating is always an UPDATE (no insert race).
    op.bulk_insert(active, [{"id": 1, "version": None}])


def downgrade() -> None:
    with op.batch_alter_table("erasure_job") as batch_op:
        batch_op.drop_column("auto_deploy")
    op.drop_table("active_deployment")
    op.drop_table("deployment")
