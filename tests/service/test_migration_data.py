"""Migrations keep the data: a database with rows in every table, at each revision, upgraded to head,
downgraded back and upgraded again, has the same rows, on SQLite and on PostgreSQL.

(SQLite's batch migrations copy a table and drop the old one; with foreign keys on, that DROP used to
cascade and empty job_event and idempotency_key.)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from alembic import command
from conftest import empty_postgres_database
from sqlalchemy import inspect, text

from service.core.db import alembic_config, engine_for, migrate

T = "'2026-01-01 00:00:00'"
# The rows each revision's new tables get (active_deployment's one row comes with 0002 itself).
ROWS = {
    "0001": [
        "INSERT INTO erasure_job (id, status, concept, category, config, requested_by, attempts, created_at, "
        f"updated_at) VALUES ('er_1', 'succeeded', 'red', 'abstraction', '{{}}', 'alice', 1, {T}, {T})",
        f"INSERT INTO job_event (job_id, kind, message, created_at) VALUES ('er_1', 'state', 'queued', {T})",
        f"INSERT INTO job_event (job_id, kind, message, created_at) VALUES ('er_1', 'state', 'done', {T})",
        "INSERT INTO idempotency_key (key, request_sha256, job_id, response, created_at) "
        f"VALUES ('k1', 'abc', 'er_1', '{{}}', {T})",
    ],
    "0002": [f"INSERT INTO deployment (version, entries, created_at) VALUES (1, '[]', {T})"],
    "0003": [
        "INSERT INTO api_key (id, name, role, prefix, secret_sha256, created_at) "
        f"VALUES ('key_1', 'ops', 'admin', 'zk_x', 'f00', {T})",
        f"INSERT INTO audit_event (at, actor, action) VALUES ({T}, 'ops', 'key.create')",
    ],
}


def counts(url: str) -> dict[str, int]:
    engine = engine_for(url)
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    with engine.connect() as conn:
        return {t: conn.scalar(text(f"SELECT count(*) FROM {t}")) for t in sorted(tables)}


@contextmanager
def database(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'upgrade.db'}"
    else:
        with empty_postgres_database() as url:
            yield url


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
@pytest.mark.parametrize("start", list(ROWS))
def test_rows_survive_upgrade_downgrade_upgrade(backend: str, start: str, tmp_path: Path) -> None:
    with database(backend, tmp_path) as url:
        migrate(url, start)
        with engine_for(url).begin() as conn:
            for revision, inserts in ROWS.items():
                if revision <= start:
                    for insert in inserts:
                        conn.execute(text(insert))
        before = counts(url)
        assert all(n > 0 for n in before.values()), before
        migrate(url)  # to head
        after = counts(url)
        assert {t: after[t] for t in before} == before
        command.downgrade(alembic_config(url), start)
        assert counts(url) == before
        migrate(url)
        assert {t: n for t, n in counts(url).items() if t in before} == before
