"""What a hostile review broke, each checked through the public surface: limits in tokens, invisible
characters, NUL bytes, quotas and priority, scoped idempotency, secrets and internals kept out of what
clients and logs show."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from jobclient import REPO, api_key, bearer, make_job, settings_env

from api.app import create_app
from service.core.db import migrate, session_factory
from service.core.settings import Settings
from service.erasures import idempotency, lifecycle
from service.erasures.contract import JobStatus
from service.erasures.runner import run_job

PROBLEM = "application/problem+json"


def app_client(settings: Settings, role: str = "moderator", name: str = "alice") -> TestClient:
    migrate(settings.database_url)
    return TestClient(create_app(settings), headers=bearer(api_key(settings, role, name)))


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None) -> Settings:
    settings = Settings(var_dir=tmp_path_factory.mktemp("hardening-var"), model_dir=model_dir,
                        embedded_worker=False, max_active_jobs_per_key=3, max_active_cost_per_key=5_000)
    migrate(settings.database_url)
    return settings


@pytest.fixture(scope="module")
def client(settings: Settings) -> Iterator[TestClient]:
    with app_client(settings) as c:
        yield c


def refused(r: Any, field: str, status: int = 422) -> str:
    assert r.status_code == status and r.headers["content-type"] == PROBLEM, r.text
    assert r.json()["errors"][0]["field"] == field, r.text
    return str(r.json()["detail"])


@pytest.mark.parametrize("concept", ["😀" * 200, "漢" * 200])
def test_a_concept_long_in_tokens_is_refused_at_submission(client: TestClient, concept: str) -> None:
    # 200 characters, within the 200-character limit, but far over 512 tokens once templated.
    detail = refused(client.post("/erasures", json={"concept": concept, "category": "custom"}), "concept")
    assert "512 tokens" in detail


def test_a_preservation_entry_long_in_tokens_is_refused(client: TestClient) -> None:
    body = {"concept": "red", "category": "abstraction", "preservation": ["a blue circle", "🟦" * 200]}
    assert "tokens" in refused(client.post("/erasures", json=body), "preservation[1]")


@pytest.mark.parametrize("text", ["Mira\u200b", "Mi\u200dra", "Mira\U000e0041", "Mira\ufdd0", "\u2060Mira"])
def test_invisible_characters_are_refused(client: TestClient, text: str) -> None:
    refused(client.post("/erasures", json={"concept": text, "category": "celebrity"}), "concept")
    body = {"concept": "Mira", "category": "celebrity", "preservation": [text]}
    refused(client.post("/erasures", json=body), "preservation[0]")  # never "preserve what you erase"


def test_text_is_nfc_and_compared_after_normalisation(client: TestClient) -> None:
    decomposed = "Cafe\u0301"
    r = client.post("/erasures", json={"concept": decomposed, "category": "entity"})
    assert r.status_code == 202 and r.json()["concept"] == "Caf\u00e9"
    body = {"concept": "Caf\u00e9", "category": "entity", "preservation": [decomposed]}
    assert "the concept itself" in refused(client.post("/erasures", json=body), "preservation")
    client.post(f"/erasures/{r.json()['id']}/cancel")


def test_nul_bytes_are_a_422_naming_the_parameter_on_postgres(postgres_url: str, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, database_url=postgres_url, embedded_worker=False)
    with app_client(settings, "admin", "nul-admin") as client:
        refused(client.get("/erasures", params={"concept": "a\x00b"}), "concept")
        refused(client.get("/audit", params={"actor": "\x00"}), "actor")
        refused(client.get("/erasures/er_%00"), "job_id")


def test_quotas_per_key_in_jobs_and_cost(settings: Settings, client: TestClient) -> None:
    ids = []
    for _ in range(3):
        r = client.post("/erasures", json={"concept": "red", "category": "abstraction", "steps": 10})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    full = client.post("/erasures", json={"concept": "red", "category": "abstraction", "steps": 10})
    assert full.status_code == 429 and full.json()["code"] == "quota_exceeded" and full.headers["retry-after"]
    with app_client(settings, "moderator", "bob") as bob:  # another key has its own quota
        huge = bob.post("/erasures", json={"concept": "red", "category": "abstraction", "steps": 5000, "rank": 256})
        assert "costs" in refused(huge, "steps", 429)
        ok = bob.post("/erasures", json={"concept": "red", "category": "abstraction", "steps": 10})
        assert ok.status_code == 202
        bob.post(f"/erasures/{ok.json()['id']}/cancel")
    client.post(f"/erasures/{ids[0]}/cancel")  # a finished job frees its place
    again = client.post("/erasures", json={"concept": "red", "category": "abstraction", "steps": 10})
    assert again.status_code == 202
    for job_id in [*ids[1:], again.json()["id"]]:
        client.post(f"/erasures/{job_id}/cancel")


def test_only_admins_set_a_priority_and_urgent_jobs_run_first(settings: Settings, client: TestClient) -> None:
    body = {"concept": "circle", "category": "entity", "steps": 5}
    refused(client.post("/erasures", json={**body, "priority": 5}), "priority", 403)
    normal = client.post("/erasures", json=body).json()
    with app_client(settings, "admin", "urgent-admin") as admin:
        urgent = admin.post("/erasures", json={**body, "priority": 9}).json()
        assert urgent["priority"] == 9
        with session_factory(settings.database_url)() as db:
            assert lifecycle.next_queued(db) == urgent["id"]  # though submitted later
        admin.post(f"/erasures/{urgent['id']}/cancel")
    client.post(f"/erasures/{normal['id']}/cancel")


def test_idempotency_keys_are_per_api_key_and_expire(tmp_path: Path, model_dir: Path | None) -> None:
    settings = Settings(var_dir=tmp_path, model_dir=model_dir, embedded_worker=False, idempotency_ttl_s=1)
    headers = {"Idempotency-Key": "ticket-1"}
    with app_client(settings, "moderator", "alice") as alice, app_client(settings, "moderator", "bob") as bob:
        first = alice.post("/erasures", json={"concept": "red", "category": "abstraction"}, headers=headers)
        # Bob's key: the same header value is his own request, and does not reveal Alice's job.
        other = bob.post("/erasures", json={"concept": "blue", "category": "abstraction"}, headers=headers)
        assert other.status_code == 202 and other.json()["id"] != first.json()["id"]
        replay = alice.post("/erasures", json={"concept": "red", "category": "abstraction"}, headers=headers)
        assert replay.headers.get("idempotent-replayed") == "true" and replay.json()["id"] == first.json()["id"]
        time.sleep(1.2)
        later = alice.post("/erasures", json={"concept": "green", "category": "abstraction"}, headers=headers)
        assert later.status_code == 202 and later.json()["id"] != first.json()["id"]  # expired, not a 422
    with session_factory(settings.database_url)() as db:
        time.sleep(1.1)
        assert idempotency.purge_expired(db, settings.idempotency_ttl_s) >= 2


def test_clients_get_stable_errors_not_internals(settings: Settings, client: TestClient) -> None:
    missing = make_job(settings)  # succeeded, but its artifact object is not in the store
    r = client.get(f"/erasures/{missing}/artifact")
    assert r.status_code == 503 and r.json()["code"] == "artifact_missing" and "/nowhere" not in r.text
    broker_down = settings.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
    with TestClient(create_app(broker_down)) as anonymous:
        ready = anonymous.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"]["broker"] == "unavailable"
    assert "127.0.0.1" not in ready.text and "Error" not in ready.text


def test_a_failed_jobs_events_carry_no_traceback(settings: Settings) -> None:
    broken = make_job(settings, JobStatus.QUEUED)  # config {}: the core refuses it
    assert run_job(broken, settings) == "failed"
    from jobclient import all_events_direct

    last = all_events_direct(settings, broken)[-1]
    assert last.kind == "error" and "traceback" not in (last.data or {}) and "Traceback" not in last.message


def test_the_start_up_log_masks_every_password(tmp_path: Path, postgres_url: str) -> None:
    from sqlalchemy.engine import make_url

    settings = Settings(var_dir=tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERASE_")} | settings_env(settings)
    env |= {"ZERASE_BROKER_URL": "redis://:broker-s3cret@127.0.0.1:1/0",
            "ZERASE_DATABASE_URL": make_url(postgres_url).set(password="db-s3cret").render_as_string(False),
            "ZERASE_AUTO_MIGRATE": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", "0"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "routes" in line:
                break
    finally:
        proc.kill()
        proc.wait()
    log = "".join(lines)
    assert "routes" in log and "s3cret" not in log and "***" in log, log


def test_celery_sends_urgent_jobs_to_the_queue_read_first(distributed_settings: Settings) -> None:
    import redis

    from worker.dispatch import CeleryDispatcher

    queue = f"{distributed_settings.queue_name}-priority"
    settings = distributed_settings.model_copy(update={"queue_name": queue})
    dispatcher = CeleryDispatcher(settings)
    try:
        dispatcher.enqueue("er_normal", 0)
        dispatcher.enqueue("er_urgent", 9)
    finally:
        dispatcher.stop()
    client = redis.Redis.from_url(settings.broker_url)
    prefix = settings.broker_key_prefix
    # Kombu's Redis transport keeps one list per priority step and reads the unsuffixed one first.
    first, last = client.lrange(f"{prefix}{queue}", 0, -1), client.lrange(f"{prefix}{queue}:9", 0, -1)
    client.delete(f"{prefix}{queue}", f"{prefix}{queue}:9")
    assert len(first) == 1 and b"er_urgent" in first[0]
    assert len(last) == 1 and b"er_normal" in last[0]


def test_an_unloadable_patch_answers_without_internals(settings: Settings) -> None:
    from jobclient import live_api

    missing = make_job(settings)  # its artifact is at /nowhere/...: it cannot be fetched
    with live_api(settings) as admin:
        assert admin.post(f"/erasures/{missing}/deploy").status_code == 201
        r = admin.post("/generate", json={"prompt": "a red circle"})
        admin.post(f"/erasures/{missing}/retire")
    assert r.status_code == 503 and r.json()["code"] == "safety_patch_unavailable"
    assert "/nowhere" not in r.text and "Error" not in r.json()["detail"]
