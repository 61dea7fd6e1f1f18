"""Deployments judged as served: each version's own evaluation, its status, an activation waiting for it, its fusion

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        batch.add_column(sa.Column("evaluation_status", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("evaluation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("evaluation_started_at", UTC_TIME, nullable=True))
        batch.add_column(sa.Column("pending_activation", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("refusal", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("fusion", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("fused", sa.JSON(), nullable=True))
        batch.create_index(batch.f("ix_deployment_evaluation_status"), ["evaluation_status"])


def downgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        batch.drop_index(batch.f("ix_deployment_evaluation_status"))
        for column in ("fused", "fusion", "refusal", "pending_activation", "evaluation_started_at", "evaluation", "evaluation_status"):
            batch.drop_column(column)
