"""Production-shaped end to end over HTTP: Postgres, Redis, real `zerase worker` (Celery)
processes and an S3 API server (moto). Submit -> succeeded with the artifact in S3; cancel queued
and running; a worker killed mid-job is replaced and the job resumes from its checkpoint, in a later round too."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlparse

import httpx
import pytest
from conftest import empty_postgres_database
from jobclient import WorkerFactory, all_events, live_api, submit, wait_for

from service.core.db import migrate
from service.core.settings import Settings
from service.core.store import s3_client
from service.erasures.runner import base_pipeline

pytestmark = pytest.mark.minutes(4.5)  # scheduled first (tests/conftest.py)


@pytest.fixture(scope="module")
def client(distributed_settings: Settings, celery_worker: subprocess.Popen[bytes]) -> Iterator[httpx.Client]:
    with live_api(distributed_settings) as c:
        yield c


def test_submit_to_succeeded_with_the_artifact_in_s3(client: httpx.Client, distributed_settings: Settings,
                                                      tmp_path_factory: pytest.TempPathFactory) -> None:
    from zerase.patch.artifact import load_artifact

    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    job = submit(client, concept="Toko", category="celebrity", steps=6, reason="LEGAL-9: trademark")
    done = wait_for(client, job["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["attempts"] == 1 and done["progress"]["step"] == 6

    artifact = done["artifact"]
    uri = urlparse(artifact["uri"])
    assert uri.scheme == "s3" and uri.netloc == "zerase-test"
    assert uri.path == f"/erasures/sha256/{artifact['sha256'][:2]}/{artifact['sha256']}.safetensors"
    obj = s3_client(distributed_settings).get_object(Bucket=uri.netloc, Key=uri.path.lstrip("/"))["Body"].read()
    assert hashlib.sha256(obj).hexdigest() == artifact["sha256"] and len(obj) == artifact["bytes"]

    streamed = client.get(artifact["url"])
    assert streamed.status_code == 200 and streamed.content == obj
    digest = base64.b64encode(bytes.fromhex(artifact["sha256"])).decode()
    assert streamed.headers["repr-digest"] == f"sha-256=:{digest}:"
    path = tmp_path_factory.mktemp("download") / "toko.safetensors"
    path.write_bytes(streamed.content)
    assert load_artifact(path, base_pipeline(distributed_settings)).metadata["concept"] == "Toko"

    events = all_events(client, job["id"])
    assert [e["data"]["status"] for e in events if e["kind"] == "state"] == ["queued", "running", "succeeded"]
    metrics = [e["data"] for e in events if e["kind"] == "metrics"]
    assert metrics[0]["step"] == 1 and metrics[-1]["step"] == 6

    # With redirects on, the same download is a presigned URL straight to the store.
    with live_api(distributed_settings.model_copy(update={"artifact_redirect": True})) as redirecting:
        r = redirecting.get(artifact["url"])
        assert r.status_code == 307 and r.headers["repr-digest"] == f"sha-256=:{digest}:"
        assert httpx.get(r.headers["location"]).content == obj


def test_cancel_queued_at_once_and_running_at_the_next_step(client: httpx.Client) -> None:
    running = submit(client, concept="purple", category="abstraction", steps=2000)
    wait_for(client, running["id"], ("running",), min_step=1)
    queued = submit(client, concept="yellow", category="abstraction", steps=6)  # the only worker is busy

    r = client.post(f"/erasures/{queued['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = client.post(f"/erasures/{running['id']}/cancel")
    assert r.status_code == 202 and r.json()["cancel_requested_at"]
    done = wait_for(client, running["id"], timeout_s=60)
    assert done["status"] == "cancelled" and done["progress"]["step"] < 2000 and done["artifact"] is None

    # The worker gets the cancelled job's message next and leaves it alone.
    after = submit(client, concept="yellow", category="abstraction", steps=2)
    assert wait_for(client, after["id"])["status"] == "succeeded"
    assert [e["data"]["status"] for e in all_events(client, queued["id"]) if e["kind"] == "state"] == [
        "queued", "cancelled"]
    assert client.get(f"/erasures/{queued['id']}").json()["attempts"] == 0


def test_killed_worker_is_noticed_and_the_job_resumes_from_its_checkpoint(
        distributed_settings: Settings, start_worker: WorkerFactory) -> None:
    # A queue of its own, so the session's worker does not take this job first (after the requeue,
    # any worker's sweeper may resend it; both resume from the same checkpoint).
    settings = distributed_settings.model_copy(update={"queue_name": distributed_settings.queue_name + "-crash"})
    first = start_worker(settings, "crash-1")
    with live_api(settings) as client:
        job = submit(client, concept="star", category="entity", steps=20)
        wait_for(client, job["id"], ("running",), min_step=4)  # so a checkpoint (every 2 steps) exists
        os.kill(first.pid, signal.SIGKILL)  # no goodbye: only the missing heartbeat tells
        first.wait()
        start_worker(settings, "crash-2")
        done = wait_for(client, job["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["attempts"] == 2

        events = all_events(client, job["id"])
        requeued = next(i for i, e in enumerate(events) if "silent since" in e["message"])
        second = next(i for i, e in enumerate(events) if e["message"].startswith("running (attempt 2)"))
        assert requeued < second
        resumed = [e["data"]["step"] for e in events[second:] if e["kind"] == "metrics"]
        assert resumed[0] > 2, "attempt 2 started over instead of resuming from the checkpoint"
        assert resumed[-1] == 20
        # One life, told once: queued, running, back to the queue, running again, succeeded; one artifact.
        states = [e["data"]["status"] for e in events if e["kind"] == "state"]
        assert states == ["queued", "running", "queued", "running", "succeeded"], states
        assert [e["data"]["attempt"] for e in events if e["data"] and "attempt" in e["data"]] == [1, 2]
        assert client.get(done["artifact"]["url"]).status_code == 200


def test_a_worker_killed_in_a_later_round_resumes_that_round(
        distributed_settings: Settings, start_worker: WorkerFactory) -> None:
    # The gate on, one more round allowed: triangle at 40 steps is still drawn, and its category's constraint is
    # already the loosest (none), so the job trains a second round at twice the steps, and the worker dies in it
    # (served as trained: a stronger serving could pass round 1). A database of its own: the session's worker (which
    # does not evaluate) must not be the one that picks the job up again.
    with empty_postgres_database() as url:
        migrate(url)
        settings = distributed_settings.model_copy(update={
            "database_url": url, "queue_name": distributed_settings.queue_name + "-retune", "evaluate_jobs": True,
            "deploy_gate": True, "retune_rounds": 1, "redteam": False, "served_strengths": [1.0]})
        first = start_worker(settings, "retune-1")
        with live_api(settings) as client:
            job = submit(client, concept="triangle", category="entity", steps=40)
            deadline = time.monotonic() + 300
            while True:  # round 2 running, past its first checkpoint (every 2 steps)
                now = client.get(f"/erasures/{job['id']}").json()
                assert now["status"] not in ("succeeded", "failed", "cancelled"), now
                assert time.monotonic() < deadline, now
                progress = now["progress"] or {}
                # Round 2's own progress: until its first step, the row still shows round 1's last (40 of 40).
                if progress.get("total") == 80 and 4 <= progress.get("step", 0) < 80:
                    break
                time.sleep(0.1)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
            second = start_worker(settings, "retune-2")
            try:
                done = wait_for(client, job["id"])
            finally:
                second.terminate()
                second.wait(timeout=60)
            assert done["status"] == "succeeded", done["error"]
            assert done["attempts"] == 2
            # Round 1 is not trained again: the second attempt resumes round 2 from its checkpoint and publishes it.
            retune = done["evaluation"]["retune"]
            assert [r["steps"] for r in retune["rounds"]] == [40, 80] and retune["published"] == 2
            events = all_events(client, job["id"])
            assert len([e for e in events if "retune" in (e["data"] or {})]) == 1
            begun = next(i for i, e in enumerate(events) if e["message"].startswith("running (attempt 2)"))
            resumed = [e["data"]["step"] for e in events[begun:] if e["kind"] == "metrics"]
            assert resumed[0] > 2 and resumed[-1] == 80, resumed
            assert client.get(done["artifact"]["url"]).status_code == 200
