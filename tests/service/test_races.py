"""Actions that read, decide and write are serialised on every supported database (SQLite and PostgreSQL):
two admins revoking each other at once leave one admin; two deploys at once both land."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import empty_postgres_database
from jobclient import api_key, at_once, bearer, live_api, make_job
from sqlalchemy import func, select

from service.core.db import migrate, session_factory
from service.core.settings import Settings
from service.keys.contract import Role
from service.keys.models import ApiKey

TRIALS = 3


@contextmanager
def settings_on(backend: str, tmp_path: Path) -> Iterator[Settings]:
    """A database of the test's own: the last-admin rule counts every admin key in it."""
    if backend == "sqlite":
        settings = Settings(var_dir=tmp_path / "var", embedded_worker=False)
        migrate(settings.database_url)
        yield settings
        return
    with empty_postgres_database() as url:
        migrate(url)
        yield Settings(var_dir=tmp_path / "var", database_url=url, embedded_worker=False)


def live_admins(settings: Settings) -> int:
    with session_factory(settings.database_url)() as db:
        return int(db.scalar(select(func.count()).select_from(ApiKey).where(ApiKey.role == Role.ADMIN,
                                                                          ApiKey.revoked_at.is_(None))) or 0)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_admins_revoking_each_other_leave_one(backend: str, tmp_path: Path) -> None:
    with settings_on(backend, tmp_path) as settings, live_api(settings, role="moderator") as client:
        for _ in range(TRIALS):
            secrets = [api_key(settings, "admin", f"admin-{i}") for i in range(2)]
            ids = [next(k["id"] for k in client.get("/keys", headers=bearer(s)).json()["data"]
                        if k["prefix"] == s[:10]) for s in secrets]
            answers = at_once(*[
                (lambda s=s, other=other: client.post(f"/keys/{other}/revoke", headers=bearer(s)))
                for s, other in ((secrets[0], ids[1]), (secrets[1], ids[0]))])
            statuses = sorted(r.status_code for r in answers)
            assert statuses in ([200, 401], [200, 409]), [r.text for r in answers]
            assert live_admins(settings) == 1
            # Leave no admin behind for the next trial's count.
            with session_factory(settings.database_url)() as db:
                for key in db.scalars(select(ApiKey).where(ApiKey.role == Role.ADMIN)):
                    db.delete(key)
                db.commit()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_concurrent_deploys_both_land(backend: str, tmp_path: Path) -> None:
    with settings_on(backend, tmp_path) as settings, live_api(settings, role="moderator") as client:
        for _ in range(TRIALS):
            jobs = [make_job(settings), make_job(settings)]
            answers = at_once(*[(lambda j=j: client.post(f"/erasures/{j}/deploy")) for j in jobs])
            assert [r.status_code for r in answers] == [201, 201], [r.text for r in answers]
            active = client.get("/deployments/active").json()["deployment"]
            assert set(jobs) <= {e["erasure_id"] for e in active["entries"]}
