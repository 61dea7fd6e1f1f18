"""The deploy gate: a weak erasure (1 training step) is refused with a 409 naming the failing metric, by
`POST /erasures/{id}/deploy`, `POST /deployments` and auto-deploy; an admin may force it (audited), a
moderator may not; the service's default erasure passes. `GET /erasures/{id}/evaluation` shows the verdict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jobclient import all_events, api_key, bearer, live_api, submit, wait_for

from service.core.db import migrate
from service.core.settings import Settings

pytestmark = pytest.mark.minutes(3)  # scheduled first (tests/conftest.py)

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Settings:
    settings = Settings(var_dir=tmp_path_factory.mktemp("gate-var"), model_dir=model_dir, deploy_gate=True,
                        progress_interval_s=0.5)
    migrate(settings.database_url)
    return settings


@pytest.fixture(scope="module")
def admin(settings: Settings) -> Iterator[httpx.Client]:
    with live_api(settings, "admin") as c:
        yield c


@pytest.fixture(scope="module")
def weak(admin: httpx.Client, monkeypatch_module: pytest.MonkeyPatch) -> dict[str, Any]:
    # Auto-deploy reads the process's own settings: the gate on there too.
    monkeypatch_module.setenv("ZERASE_DEPLOY_GATE", "true")
    job = wait_for(admin, submit(admin, concept="red", category="abstraction", steps=1, auto_deploy=True)["id"])
    assert job["status"] == "succeeded", job["error"]
    return job


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def refused(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == "deploy_gate"
    return body


def test_a_weak_erasure_is_refused_naming_the_metric(admin: httpx.Client, weak: dict[str, Any]) -> None:
    ev = weak["evaluation"]
    assert ev["status"] == "evaluated" and ev["acc_e"] > 0.25, "one step does not erase red"
    body = refused(admin.post(f"/erasures/{weak['id']}/deploy"))
    assert body["errors"][0]["field"] == "acc_e" and f"acc_e {ev['acc_e']:.3f} > 0.25" in body["detail"]
    assert {"erasure_id": weak["id"], "metric": "acc_e", "value": ev["acc_e"], "limit": 0.25, "concept": None,
            "version": None} in body["gate"]  # judged by its own evaluation: alone, it is served as evaluated
    refused(admin.post("/deployments", json={"erasure_ids": [weak["id"]]}))
    verdict = admin.get(f"/erasures/{weak['id']}/evaluation").json()
    assert verdict["gate"]["passed"] is False and verdict["gate"]["misses"][0]["metric"] == "acc_e"
    assert {a["name"] for a in verdict["attacks"]} >= {"misspelling", "case"}
    assert all({"name", "success_rate", "prompts"} <= set(a) for a in verdict["attacks"])
    assert admin.get("/deployments/active").json()["version"] == 0, "auto-deploy was refused too"
    errors = [e for e in all_events(admin, weak["id"]) if e["kind"] == "error"]
    assert any("auto_deploy failed" in e["message"] and "deploy gate" in e["message"] for e in errors)


def test_only_an_admin_may_force_it_and_that_is_audited(admin: httpx.Client, weak: dict[str, Any],
                                                       settings: Settings) -> None:
    moderator = bearer(api_key(settings, "moderator", "gate-moderator"))
    r = admin.post(f"/erasures/{weak['id']}/deploy", json={"force": True}, headers=moderator)
    assert r.status_code == 403 and r.json()["errors"][0]["field"] == "force", r.text
    forced = admin.post(f"/erasures/{weak['id']}/deploy", json={"force": True})
    assert forced.status_code == 201, forced.text
    audit = admin.get("/audit", params={"action": "deployment.gate_forced"}).json()["data"]
    assert audit and audit[0]["data"]["misses"][0]["metric"] == "acc_e"
    assert admin.post(f"/erasures/{weak['id']}/retire").status_code == 201


def test_the_default_erasure_passes(admin: httpx.Client) -> None:
    job = wait_for(admin, submit(admin, concept="blue", category="abstraction")["id"], timeout_s=900)
    assert job["status"] == "succeeded", job["error"]
    verdict = admin.get(f"/erasures/{job['id']}/evaluation").json()
    assert verdict["gate"]["passed"], verdict["gate"]
    assert admin.post(f"/erasures/{job['id']}/deploy").status_code == 201
