"""Immediate mitigation on the embedded service with the bundled model: a takedown asked for with
mitigate=immediate is refused by /generate within seconds, before its erasure has trained; deploying the erasure
retires the guard entry (the trained patch takes over, recorded in the version history); cancelling a takedown
ends its guard. Prompts that do not read as the concept are served throughout. Split as the Compose file
deploys it (a control plane without the model, generation processes with it), the generation process calibrates
the guard and records how it went on the job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from jobclient import api_key, bearer, live_api, wait_for

from api.app import create_app
from service.core.db import migrate
from service.core.settings import Settings

SHORT = {"steps": 30, "rank": 4}  # the erasure trains in seconds; what is under test is what serves meanwhile


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Settings:
    settings = Settings(var_dir=tmp_path_factory.mktemp("mitigation-var"), model_dir=model_dir,
                        evaluate_jobs=False)
    migrate(settings.database_url)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[httpx.Client]:
    with live_api(settings) as c:
        yield c


def generate(client: httpx.Client, prompt: str) -> httpx.Response:
    return client.post("/generate", json={"prompt": prompt, "seed": 0})


def active(client: httpx.Client) -> dict:
    version = client.get("/deployments/active").json()["version"]
    return client.get(f"/deployments/{version}").json() if version else {"version": 0, "guard": [], "entries": []}


def test_a_takedown_is_refused_before_it_trains_and_the_erasure_takes_over(client: httpx.Client) -> None:
    assert generate(client, "a red circle").status_code == 200
    started = time.monotonic()
    created = client.post("/erasures", json={"concept": "red", "category": "abstraction", "mitigate": "immediate",
                                             "auto_deploy": True, **SHORT})
    assert created.status_code == 202, created.text
    job = created.json()
    refused = generate(client, "a red circle")
    mitigated_s = time.monotonic() - started
    assert refused.status_code == 422 and refused.json()["code"] == "takedown", refused.text
    assert job["id"] in refused.json()["detail"] and "red" not in refused.json()["detail"]
    assert client.get(f"/erasures/{job['id']}").json()["status"] != "succeeded", "the guard came first"
    print(f"time to mitigation {mitigated_s:.1f}s")

    mitigation = job["mitigation"]
    assert mitigation["stage"] == "guarded" and mitigation["guard"]["stage"] == "guarded", mitigation
    calibration = mitigation["guard"]["calibration"]
    assert calibration["detection"] >= 0.95 and calibration["false_positives"]["coco"] <= 0.01
    guarded = active(client)
    assert guarded["version"] == mitigation["guard"]["version"]
    assert [g["erasure_id"] for g in guarded["guard"]] == [job["id"]]
    for prompt in ("a RED circle", "a circle in red", "a redd square"):  # as the model reads it, not as spelt
        assert generate(client, prompt).status_code == 422, prompt
    for prompt in ("a blue circle", "a green star", "A man riding a horse on a beach."):
        served = generate(client, prompt)
        assert served.status_code == 200, (prompt, served.text)
        assert served.headers["X-Safety-Patch-Version"] == str(guarded["version"])

    done = wait_for(client, job["id"], timeout_s=600)
    assert done["status"] == "succeeded", done
    deadline = time.monotonic() + 60  # auto-deploy follows the job's end
    while (deployed := active(client))["version"] == guarded["version"] and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [e["erasure_id"] for e in deployed["entries"]] == [job["id"]]
    assert deployed["guard"] == [] and "guard retired" in deployed["reason"]
    assert client.get(f"/erasures/{job['id']}").json()["mitigation"]["stage"] == "deployed"
    served = generate(client, "a red circle")
    assert served.status_code == 200 and served.headers["X-Safety-Patch-Version"] == str(deployed["version"])


def test_cancelling_a_takedown_ends_its_guard(client: httpx.Client) -> None:
    created = client.post("/erasures", json={"concept": "Mira", "category": "celebrity", "mitigate": "immediate",
                                             **SHORT}).json()
    assert created["mitigation"]["stage"] == "guarded", created
    assert generate(client, "a picture of Mira").status_code == 422
    before = active(client)
    assert client.post(f"/erasures/{created['id']}/cancel").status_code in (200, 202)
    assert wait_for(client, created["id"], timeout_s=120)["status"] == "cancelled"
    deadline = time.monotonic() + 30
    while created["id"] in [g["erasure_id"] for g in active(client)["guard"]] and time.monotonic() < deadline:
        time.sleep(0.3)
    after = active(client)
    assert after["version"] > before["version"] and created["id"] not in [g["erasure_id"] for g in after["guard"]]
    assert after["entries"] == before["entries"], "ending a guard changes no erasure"
    assert generate(client, "a picture of Mira").status_code == 200
    history = {d["version"]: d["reason"] for d in client.get("/deployments").json()["data"]}
    assert "cancelled" in history[after["version"]]


def test_a_guard_ends_by_hand_and_not_twice(client: httpx.Client) -> None:
    created = client.post("/erasures", json={"concept": "Zed", "category": "celebrity", "mitigate": "immediate",
                                             **SHORT}).json()
    client.post(f"/erasures/{created['id']}/cancel")  # keep the worker free; the guard is ended by hand first
    ended = client.delete(f"/erasures/{created['id']}/guard")
    if ended.status_code == 409:  # the cancel got there first
        assert created["id"] not in [g["erasure_id"] for g in active(client)["guard"]]
    else:
        assert ended.status_code == 200 and ended.json()["mitigation"]["guard"]["stage"] == "ended"
    again = client.delete(f"/erasures/{created['id']}/guard")
    assert again.status_code == 409 and again.headers["content-type"].startswith("application/problem+json")


def test_split_control_and_generation(tmp_path: Path, model_dir: Path | None) -> None:
    var = tmp_path / "var"
    common = {"var_dir": var, "model_dir": model_dir, "evaluate_jobs": False, "embedded_worker": False}
    control_settings = Settings(api_routes="control", **common)
    migrate(control_settings.database_url)
    admin = bearer(api_key(control_settings, "admin", "split-admin"))
    with TestClient(create_app(control_settings), headers=admin) as control, \
            TestClient(create_app(Settings(api_routes="generation", **common)), headers=admin) as generation:
        job = control.post("/erasures", json={"concept": "purple", "category": "abstraction",
                                              "mitigate": "immediate"}).json()
        assert job["mitigation"]["stage"] == "guarded" and job["mitigation"]["guard"]["stage"] == "calibrating"
        refused = generation.post("/generate", json={"prompt": "a purple star", "seed": 1})
        assert refused.status_code == 422 and job["id"] in refused.json()["detail"], refused.text
        assert generation.post("/generate", json={"prompt": "a yellow star", "seed": 1}).status_code == 200
        guard = control.get(f"/erasures/{job['id']}").json()["mitigation"]["guard"]
        assert guard["stage"] == "guarded" and guard["calibration"]["detection"] >= 0.95, guard
        events = control.get(f"/erasures/{job['id']}/events").json()["data"]
        assert any("prompt guard live" in e["message"] for e in events)
