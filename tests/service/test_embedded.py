"""The embedded default end to end over HTTP: SQLite, local files, the worker thread in the API
process, the real model. Submit -> succeeded with a LoRA that loads; cancel while running; a
failed job retried; a tampered artifact refused."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from jobclient import all_events, live_api, submit, wait_for

from service.core.db import migrate
from service.core.settings import Settings
from service.core.store import file_url_path
from service.erasures.runner import base_pipeline


def embedded_settings(var_dir: Path, model_dir: Path | None, **overrides: object) -> Settings:
    settings = Settings(var_dir=var_dir, model_dir=model_dir, progress_interval_s=0.5, metrics_event_interval_s=1.0,
                        checkpoint_every=2, evaluate_jobs=False, store_retry_base_s=0.1,
                        **overrides)  # type: ignore[arg-type]
    migrate(settings.database_url)
    return settings


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Settings:
    return embedded_settings(tmp_path_factory.mktemp("embedded-var"), model_dir)


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[httpx.Client]:
    with live_api(settings) as c:
        yield c


def test_submit_to_succeeded_with_a_loadable_artifact(client: httpx.Client, settings: Settings) -> None:
    from zerase.patch.artifact import load_artifact

    started = time.monotonic()
    job = submit(client, concept="Mira", category="celebrity", steps=6, reason="TICKET-42")
    done = wait_for(client, job["id"])
    took = time.monotonic() - started
    print(f"\nembedded: POST -> succeeded in {took:.1f}s (6 steps)")
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert done["progress"]["step"] == done["progress"]["total"] == 6 and done["progress"]["eta_seconds"] == 0

    artifact = done["artifact"]
    stored = file_url_path(artifact["uri"])
    assert stored.is_relative_to(settings.var_dir.resolve() / "artifacts")
    assert stored.name == f"{artifact['sha256']}.safetensors"  # content addressed
    body = client.get(artifact["url"])
    assert body.status_code == 200 and body.headers["content-type"] == "application/octet-stream"
    assert hashlib.sha256(body.content).hexdigest() == artifact["sha256"] == hashlib.sha256(
        stored.read_bytes()).hexdigest()
    assert len(body.content) == artifact["bytes"]
    lora = load_artifact(stored, base_pipeline(settings))  # checks format and base model
    assert lora.metadata["concept"] == "Mira" and lora.metadata["steps_done"] == 6

    events = all_events(client, job["id"], limit=2)
    statuses = [e["data"]["status"] for e in events if e["kind"] == "state"]
    assert statuses == ["queued", "running", "succeeded"]
    metrics = [e["data"] for e in events if e["kind"] == "metrics"]
    assert metrics[0]["step"] == 1 and metrics[-1]["step"] == 6  # first and last step always logged
    assert all({"lambda", "loss_erase", "loss_preserve", "eta_seconds"} <= m.keys() for m in metrics)
    assert [m["step"] for m in metrics] == sorted({m["step"] for m in metrics})


def test_cancel_a_running_job_stops_it_at_the_next_step(client: httpx.Client) -> None:
    job = submit(client, concept="red", category="abstraction", steps=2000)
    wait_for(client, job["id"], ("running",), min_step=1)
    r = client.post(f"/erasures/{job['id']}/cancel")
    assert r.status_code == 202 and r.json()["status"] == "running" and r.json()["cancel_requested_at"]
    done = wait_for(client, job["id"], timeout_s=60)
    assert done["status"] == "cancelled" and done["finished_at"] and done["artifact"] is None
    assert done["progress"]["step"] < 2000
    assert client.get(f"/erasures/{job['id']}/artifact").status_code == 409
    assert client.post(f"/erasures/{job['id']}/cancel").status_code == 409
    messages = [e["message"] for e in all_events(client, job["id"])]
    assert any("cancel requested" in m for m in messages) and messages[-1].startswith("cancelled after")


def test_tampered_artifact_is_never_served(client: httpx.Client) -> None:
    job = wait_for(client, submit(client, concept="blue", category="abstraction", steps=2)["id"])
    assert job["status"] == "succeeded", job["error"]
    path = file_url_path(job["artifact"]["uri"])
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        r = client.get(job["artifact"]["url"])
        assert r.status_code == 500 and r.json()["code"] == "artifact_corrupt"
    finally:
        path.write_bytes(original)
    assert hashlib.sha256(client.get(job["artifact"]["url"]).content).hexdigest() == job["artifact"]["sha256"]


def test_a_failed_job_can_be_retried_and_resumes(tmp_path: Path, model_dir: Path | None) -> None:
    # A store the worker cannot write to: training succeeds, publishing the artifact fails.
    blocker = tmp_path / "store"
    blocker.write_text("a file where the artifact directory should be")
    settings = embedded_settings(tmp_path / "var", model_dir, artifact_store_url=(blocker / "artifacts").as_uri())
    with live_api(settings) as client:
        job = submit(client, concept="green", category="abstraction", steps=4)
        failed = wait_for(client, job["id"])
        assert failed["status"] == "failed" and failed["error"] and failed["artifact"] is None
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["store"] != "ok"
        assert "store" in ready.json()["detail"]

        blocker.unlink()
        r = client.post(f"/erasures/{job['id']}/retry")
        assert r.status_code == 202 and r.json()["status"] == "queued" and r.json()["error"] is None
        done = wait_for(client, job["id"])
        assert done["status"] == "succeeded" and done["attempts"] == 2
        events = all_events(client, job["id"])
        kinds = [(e["kind"], e["data"].get("status") if e["data"] else None) for e in events]
        assert ("error", "failed") in kinds and kinds[-1] == ("state", "succeeded")
        retry_at = next(i for i, e in enumerate(events) if e["message"] == "queued again (retry)")
        # The checkpoint of the finished training was kept: attempt 2 trains no step again.
        assert not [e for e in events[retry_at:] if e["kind"] == "metrics"]
