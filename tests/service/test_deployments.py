"""Deployments over HTTP on PostgreSQL: immutable versions, history newest first, activation as
rollback / roll-forward without new versions, deploy/retire of one erasure, and clear errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobclient import api_key, bearer, make_job

from api.app import create_app
from service.core.settings import Settings
from service.erasures.contract import JobStatus
from service.erasures.models import new_job_id


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, postgres_url: str) -> Settings:
    return Settings(var_dir=tmp_path_factory.mktemp("deployments-var"), database_url=postgres_url,
                    embedded_worker=False)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), headers=bearer(api_key(settings, "moderator", "release-bot"))) as c:
        yield c


def field_of(response: Any) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    field: str = response.json()["errors"][0]["field"]
    return field


def test_versions_history_activation_and_rollback(client: TestClient, settings: Settings) -> None:
    a, b, c = (make_job(settings, concept=x) for x in ("red", "blue", "green"))
    r = client.post("/deployments", json={"erasure_ids": [a, b], "reason": "TICKET-7"})
    assert r.status_code == 201, r.text
    v1 = r.json()
    assert [e["erasure_id"] for e in v1["entries"]] == [a, b] and not v1["active"]
    assert [e["weight"] for e in v1["entries"]] == [0.5, 0.5]  # Appendix F default 1/N
    assert v1["created_by"] == "release-bot" and v1["reason"] == "TICKET-7"

    weighted = client.post("/deployments", json={"erasure_ids": [a], "weights": [0.7]}).json()
    assert weighted["version"] > v1["version"] and weighted["entries"][0]["weight"] == 0.7

    active = client.post(f"/deployments/{v1['version']}/activate").json()
    assert active["version"] == v1["version"] and active["activated_by"] == "release-bot"
    assert client.get("/deployments/active").json()["deployment"]["entries"] == v1["entries"]

    deployed = client.post(f"/erasures/{c}/deploy")
    assert deployed.status_code == 201
    v3 = deployed.json()
    assert v3["version"] > weighted["version"]
    assert [e["erasure_id"] for e in v3["deployment"]["entries"]] == [a, b, c]
    assert [round(e["weight"], 6) for e in v3["deployment"]["entries"]] == [0.333333] * 3

    retired = client.post(f"/erasures/{a}/retire").json()
    assert [e["erasure_id"] for e in retired["deployment"]["entries"]] == [b, c]

    history = client.get("/deployments").json()["data"]
    versions = [d["version"] for d in history]
    assert versions == sorted(versions, reverse=True) and versions[0] == retired["version"]
    assert [d["version"] for d in history if d["active"]] == [retired["version"]]

    # Rollback and roll forward move the pointer; no version is added, none changes.
    assert client.post(f"/deployments/{v1['version']}/activate").json()["version"] == v1["version"]
    assert client.post(f"/deployments/{retired['version']}/activate").json()["version"] == retired["version"]
    after = client.get("/deployments").json()["data"]
    assert [(d["version"], d["entries"]) for d in after] == [(d["version"], d["entries"]) for d in history]

    base = client.post("/deployments/0/activate").json()
    assert base["version"] == 0 and base["deployment"] is None


def test_errors_name_the_field(client: TestClient, settings: Settings) -> None:
    ok, failed = make_job(settings), make_job(settings, JobStatus.FAILED)
    missing = new_job_id()

    r = client.post("/deployments", json={"erasure_ids": [ok, missing]})
    assert r.status_code == 422 and field_of(r) == "erasure_ids[1]" and missing in r.json()["detail"]
    r = client.post("/deployments", json={"erasure_ids": [ok, failed]})
    assert r.status_code == 409 and field_of(r) == "erasure_ids[1]" and "failed" in r.json()["detail"]
    r = client.post("/deployments", json={"erasure_ids": [ok, ok]})
    assert r.status_code == 422 and field_of(r) == "erasure_ids[1]"
    r = client.post("/deployments", json={"erasure_ids": [ok], "weights": [0.5, 0.5]})
    assert r.status_code == 422 and field_of(r) == "weights"
    r = client.post("/deployments", json={"erasure_ids": [ok], "weights": [0]})
    assert r.status_code == 422 and field_of(r) == "weights[0]"
    r = client.post("/deployments", json={"erasure_ids": []})
    assert r.status_code == 422 and field_of(r) == "erasure_ids"
    r = client.post("/deployments", json={"erasure_ids": ["not-an-id"]})
    assert r.status_code == 422 and field_of(r) == "erasure_ids[0]"

    r = client.post("/deployments/999999/activate")
    assert r.status_code == 404 and field_of(r) == "version"
    r = client.post(f"/erasures/{failed}/deploy")
    assert r.status_code == 409 and failed in r.json()["detail"]

    client.post("/deployments/0/activate")
    r = client.post(f"/erasures/{ok}/retire")
    assert r.status_code == 409 and field_of(r) == "id"
    assert client.post(f"/erasures/{ok}/deploy").status_code == 201
    r = client.post(f"/erasures/{ok}/deploy")
    assert r.status_code == 409 and "already" in r.json()["detail"]
    client.post("/deployments/0/activate")
