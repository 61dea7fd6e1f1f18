"""API keys, roles and the audit log: every role on every endpoint, keys shown once and stored hashed,
revocation, and an audit line for each moderation action.

On a SQLite database of its own: the jobs queued here must not reach the Celery workers that the
PostgreSQL tests share.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobclient import api_key, bearer, make_job
from sqlalchemy import select

from api.app import create_app
from service.core.db import session_factory
from service.core.settings import Settings
from service.erasures.contract import JobStatus
from service.keys.models import ApiKey

ROLES = ("admin", "moderator", "generator")
ERASURE = "er_" + "0" * 32
KEY = "key_" + "0" * 16
# (method, path, body, roles allowed). Allowed means "past authentication and authorisation": the
# answer may still be 404/409/422 for these made-up ids.
ENDPOINTS: list[tuple[str, str, dict[str, Any] | None, set[str]]] = [
    ("POST", "/erasures", {"concept": "red", "category": "abstraction", "steps": 1}, {"admin", "moderator"}),
    ("GET", "/erasures", None, {"admin", "moderator"}),
    ("GET", f"/erasures/{ERASURE}", None, {"admin", "moderator"}),
    ("POST", f"/erasures/{ERASURE}/cancel", None, {"admin", "moderator"}),
    ("POST", f"/erasures/{ERASURE}/retry", None, {"admin", "moderator"}),
    ("GET", f"/erasures/{ERASURE}/events", None, {"admin", "moderator"}),
    ("GET", f"/erasures/{ERASURE}/artifact", None, {"admin", "moderator"}),
    ("POST", f"/erasures/{ERASURE}/deploy", None, {"admin", "moderator"}),
    ("POST", f"/erasures/{ERASURE}/retire", None, {"admin", "moderator"}),
    ("POST", "/deployments", {"erasure_ids": [ERASURE]}, {"admin", "moderator"}),
    ("GET", "/deployments", None, {"admin", "moderator"}),
    ("GET", "/deployments/active", None, {"admin", "moderator"}),
    ("POST", "/deployments/999/activate", None, {"admin", "moderator"}),
    ("POST", "/generate", {"prompt": "a red circle"}, {"admin", "generator"}),
    ("POST", "/keys", {"name": "x", "role": "generator"}, {"admin"}),
    ("GET", "/keys", None, {"admin"}),
    ("POST", f"/keys/{KEY}/revoke", None, {"admin"}),
    ("GET", "/audit", None, {"admin"}),
]
OPEN = ["/healthz", "/readyz", "/openapi.json"]


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Any) -> Settings:
    return Settings(var_dir=tmp_path_factory.mktemp("auth-var"), model_dir=model_dir, embedded_worker=False)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture(scope="module")
def keys(settings: Settings) -> dict[str, str]:
    return {role: api_key(settings, role, f"matrix-{role}") for role in ROLES}


def call(client: TestClient, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> Any:
    return client.request(method, path, json=body, headers=headers)


def problem_field(response: Any) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    field: str = response.json()["errors"][0]["field"]
    return field


@pytest.mark.parametrize(("method", "path", "body", "allowed"), ENDPOINTS, ids=[f"{m} {p}" for m, p, *_ in ENDPOINTS])
def test_role_matrix(client: TestClient, keys: dict[str, str], method: str, path: str, body: dict[str, Any] | None,
                     allowed: set[str]) -> None:
    r = call(client, method, path, body, {})
    assert r.status_code == 401 and problem_field(r) == "Authorization", r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = call(client, method, path, body, bearer("zk_not-a-key"))
    assert r.status_code == 401 and "unknown or revoked" in r.json()["detail"]
    for role in ROLES:
        r = call(client, method, path, body, bearer(keys[role]))
        if role in allowed:
            assert r.status_code not in (401, 403), f"{role}: {r.status_code} {r.text}"
        else:
            assert r.status_code == 403 and problem_field(r) == "Authorization", f"{role}: {r.text}"
            assert role in r.json()["detail"]


def test_health_and_schema_are_open(client: TestClient) -> None:
    for path in OPEN:
        assert client.get(path).status_code == 200, path
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"


def test_key_is_shown_once_stored_hashed_and_revocable(client: TestClient, settings: Settings,
                                                      keys: dict[str, str]) -> None:
    admin = bearer(keys["admin"])
    r = client.post("/keys", json={"name": "ci-generator", "role": "generator"}, headers=admin)
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["secret"]
    assert secret.startswith("zk_") and created["prefix"] == secret[:10]
    listed = {k["id"]: k for k in client.get("/keys", headers=admin).json()["data"]}
    assert "secret" not in listed[created["id"]] and listed[created["id"]]["role"] == "generator"
    with session_factory(settings.database_url)() as db:  # only the digest is on disk
        row = db.scalars(select(ApiKey).where(ApiKey.id == created["id"])).one()
        assert secret not in (row.secret_sha256, row.prefix, row.name) and len(row.secret_sha256) == 64

    assert client.get("/erasures", headers=bearer(secret)).status_code == 403  # generator: wrong role, known key
    r = client.post(f"/keys/{created['id']}/revoke", headers=admin)
    assert r.status_code == 200 and r.json()["revoked_at"]
    r = client.post("/generate", json={"prompt": "a red circle"}, headers=bearer(secret))
    assert r.status_code == 401
    assert client.post(f"/keys/{created['id']}/revoke", headers=admin).status_code == 409

    r = client.post("/keys", json={"name": "x", "role": "root"}, headers=admin)
    assert r.status_code == 422 and problem_field(r) == "role"


def test_the_last_admin_key_cannot_be_revoked(tmp_path_factory: pytest.TempPathFactory) -> None:
    settings = Settings(var_dir=tmp_path_factory.mktemp("one-admin"), embedded_worker=False)
    only = api_key(settings, "admin", "the-only-admin")
    with TestClient(create_app(settings), headers=bearer(only)) as c:
        own_id = c.get("/keys").json()["data"][0]["id"]
        r = c.post(f"/keys/{own_id}/revoke")
        assert r.status_code == 409 and "last live admin key" in r.json()["detail"]
        assert c.get("/keys").status_code == 200


def test_every_moderation_action_is_audited(client: TestClient, settings: Settings, keys: dict[str, str]) -> None:
    mod, admin = bearer(keys["moderator"]), bearer(keys["admin"])
    submitted = client.post("/erasures", json={"concept": "blue", "category": "abstraction", "reason": "T-9"},
                            headers={**mod, "Idempotency-Key": "audit-once"})
    replayed = client.post("/erasures", json={"concept": "blue", "category": "abstraction", "reason": "T-9"},
                           headers={**mod, "Idempotency-Key": "audit-once"})
    job_id = submitted.json()["id"]
    assert replayed.json()["id"] == job_id and submitted.json()["requested_by"] == "matrix-moderator"
    assert client.post(f"/erasures/{job_id}/cancel", headers=mod).status_code == 200
    done = make_job(settings, JobStatus.SUCCEEDED, "green")
    version = client.post("/deployments", json={"erasure_ids": [done], "reason": "T-10"}, headers=mod).json()
    client.post(f"/deployments/{version['version']}/activate", headers=mod)
    deployed = client.post(f"/erasures/{done}/retire", headers=mod).json()
    client.post(f"/deployments/{version['version']}/activate", headers=admin)  # roll forward again
    made = client.post("/keys", json={"name": "audited", "role": "moderator"}, headers=admin).json()
    client.post(f"/keys/{made['id']}/revoke", headers=admin)

    assert client.get("/audit", headers=mod).status_code == 403
    page = client.get("/audit", params={"limit": 200}, headers=admin).json()["data"]
    mine = [(e["actor"], e["action"], e["target"]) for e in reversed(page)
            if e["target"] in (job_id, done, made["id"]) or e["target"].startswith("deployment:")]
    v, retired = f"deployment:{version['version']}", f"deployment:{deployed['version']}"
    expected = [
        ("matrix-moderator", "erasure.submit", job_id),  # once: the replay is not an action
        ("matrix-moderator", "erasure.cancel", job_id),
        ("matrix-moderator", "deployment.create", v),
        ("matrix-moderator", "deployment.activate", v),
        ("matrix-moderator", "deployment.create", retired),
        ("matrix-moderator", "erasure.retire", done),
        ("matrix-moderator", "deployment.activate", retired),
        ("matrix-admin", "deployment.activate", v),
        ("matrix-admin", "key.create", made["id"]),
        ("matrix-admin", "key.revoke", made["id"]),
    ]
    assert [m for m in mine if m in expected] == expected
    assert [m for m in mine if m[1] == "erasure.submit" and m[2] == job_id] == expected[:1]
    newest = page[0]
    assert newest["action"] == "key.revoke" and newest["key_id"] and newest["at"]
    rollback = next(e for e in page if e["action"] == "deployment.activate" and e["actor"] == "matrix-admin")
    assert rollback["data"]["previous_version"] == deployed["version"]

    filtered = client.get("/audit", params={"action": "erasure.cancel", "target": job_id}, headers=admin).json()
    assert [e["action"] for e in filtered["data"]] == ["erasure.cancel"]
    first = client.get("/audit", params={"limit": 2}, headers=admin).json()
    second = client.get("/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin).json()
    assert first["has_more"] and second["data"][0]["id"] < first["data"][-1]["id"]
