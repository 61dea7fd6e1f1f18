"""Four-eyes on keys: who made a key, admin keys pending approval, approval requests for them, cancelled requests

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ONE_TARGET = ("(CASE WHEN erasure_id IS NULL THEN 0 ELSE 1 END) + (CASE WHEN version IS NULL THEN 0 ELSE 1 END)"
              " + (CASE WHEN key_id IS NULL THEN 0 ELSE 1 END) = 1")
ACTIONS = ("deploy", "retire", "activate", "create_key")
STATUSES = ("pending", "approved", "rejected", "failed", "cancelled")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _checks(actions: Sequence[str], statuses: Sequence[str], one_target: str) -> None:
    # Batch mode: SQLite rebuilds the table to change a CHECK constraint; PostgreSQL alters it in place.
    with op.batch_alter_table("approval_request") as batch:
        for name in ("action", "status", "one_target"):
            batch.drop_constraint(op.f(f"ck_approval_request_{name}"), type_="check")
        batch.create_check_constraint(op.f("ck_approval_request_action"), _in("action", actions))
        batch.create_check_constraint(op.f("ck_approval_request_status"), _in("status", statuses))
        batch.create_check_constraint(op.f("ck_approval_request_one_target"), one_target)


def upgrade() -> None:
    with op.batch_alter_table("api_key") as batch:
        batch.add_column(sa.Column("created_by_key_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("pending_approval", sa.Boolean(), server_default=sa.false(), nullable=False))
    with op.batch_alter_table("approval_request") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=40), nullable=True))
    _checks(ACTIONS, STATUSES, ONE_TARGET)


def downgrade() -> None:
    op.execute("DELETE FROM approval_request WHERE key_id IS NOT NULL OR status = 'cancelled'")
    _checks(ACTIONS[:3], STATUSES[:4], "(erasure_id IS NULL) <> (version IS NULL)")
    with op.batch_alter_table("approval_request") as batch:
        batch.drop_column("key_id")
    with op.batch_alter_table("api_key") as batch:
        batch.drop_column("pending_approval")
        batch.drop_column("created_by_key_id")
