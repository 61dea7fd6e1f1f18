"""Immediate mitigation: each deployment version's prompt guard, and whether a job asked for one

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("deployment") as batch:
        batch.add_column(sa.Column("guard", sa.JSON(), nullable=True))
    with op.batch_alter_table("erasure_job") as batch:
        batch.add_column(sa.Column("mitigate", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("mitigation", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("erasure_job") as batch:
        batch.drop_column("mitigation")
        batch.drop_column("mitigate")
    with op.batch_alter_table("deployment") as batch:
        batch.drop_column("guard")
