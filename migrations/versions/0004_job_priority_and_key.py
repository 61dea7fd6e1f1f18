"""Each erasure job's priority (admins may raise it) and the API key that requested it (per-key quotas)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("erasure_job") as batch:
        batch.add_column(sa.Column("priority", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("requested_key_id", sa.String(length=40), nullable=True))
        batch.create_index(batch.f("ix_erasure_job_priority"), ["priority"])
        batch.create_index(batch.f("ix_erasure_job_requested_key_id"), ["requested_key_id"])


def downgrade() -> None:
    with op.batch_alter_table("erasure_job") as batch:
        batch.drop_index(batch.f("ix_erasure_job_requested_key_id"))
        batch.drop_index(batch.f("ix_erasure_job_priority"))
        batch.drop_column("requested_key_id")
        batch.drop_column("priority")
