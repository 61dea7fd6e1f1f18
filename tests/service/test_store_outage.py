"""The artifact store (an S3 API server) unavailable when a job publishes: uploads are retried with
exponential backoff and the job succeeds once the store is back, with an artifact read back and
verified; a store down for good fails the job (never succeeded without a stored artifact) and keeps
its checkpoint, so a retry publishes without training again. The embedded service, the real model."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
from jobclient import all_events, live_api, submit_direct, wait_for

from cli.demo import free_port
from service.core.db import migrate
from service.core.settings import Settings
from service.core.store import s3_client

BUCKET = "zerase-outage"  # moto's state is per process: a bucket of its own
QUICK = {"steps": 2, "trajectories": 4}


def outage_settings(var_dir: Path, model_dir: Path | None, port: int, attempts: int) -> Settings:
    settings = Settings(var_dir=var_dir, model_dir=model_dir, progress_interval_s=0.5, evaluate_jobs=False,
                        artifact_store_url=f"s3://{BUCKET}/erasures", s3_endpoint_url=f"http://127.0.0.1:{port}",
                        s3_access_key_id="testing", s3_secret_access_key="testing",
                        store_attempts=attempts, store_retry_base_s=0.5)
    migrate(settings.database_url)
    return settings


@contextmanager
def s3_server(settings: Settings, port: int) -> Iterator[None]:
    """The store comes up: a moto S3 server on the port the settings point to, with the bucket."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        s3_client(settings).create_bucket(Bucket=BUCKET)
        yield
    finally:
        server.stop()


def store_failures(client: httpx.Client, job_id: str) -> list[str]:
    return [e["message"] for e in all_events(client, job_id) if e["message"].startswith("storing the artifact failed")]


def assert_stored_and_verified(client: httpx.Client, settings: Settings, job: dict[str, Any]) -> None:
    artifact = job["artifact"]
    uri = urlparse(artifact["uri"])
    obj = s3_client(settings).get_object(Bucket=uri.netloc, Key=uri.path.lstrip("/"))["Body"].read()
    assert hashlib.sha256(obj).hexdigest() == artifact["sha256"] and len(obj) == artifact["bytes"]
    assert client.get(artifact["url"]).content == obj


def test_a_store_that_comes_back_gets_the_artifact_on_a_retry(tmp_path: Path, model_dir: Path | None) -> None:
    port = free_port()  # nothing listens there yet: every upload is refused
    settings = outage_settings(tmp_path / "var", model_dir, port, attempts=8)
    with live_api(settings) as client:
        job = client.get(f"/erasures/{submit_direct(settings, 'blue', 'abstraction', **QUICK)}").json()
        deadline = time.monotonic() + 300
        while not store_failures(client, job["id"]):
            assert time.monotonic() < deadline, client.get(job["url"]).json()
            assert client.get(job["url"]).json()["status"] in ("queued", "running")
            time.sleep(0.2)
        assert client.get(job["url"]).json()["status"] == "running"  # not succeeded while nothing is stored
        with s3_server(settings, port):
            done = wait_for(client, job["id"], timeout_s=120)
            assert done["status"] == "succeeded", done["error"]
            assert_stored_and_verified(client, settings, done)
        failures = store_failures(client, job["id"])
        assert failures[0].startswith("storing the artifact failed (attempt 1/8), retrying in 0.5s")
        assert "EndpointConnectionError" in failures[0]
        if len(failures) > 1:  # backoff doubles
            assert "(attempt 2/8), retrying in 1s" in failures[1]
        messages = [e["message"] for e in all_events(client, job["id"])]
        assert f"artifact stored on attempt {len(failures) + 1}" in messages
        assert messages[-1].startswith("succeeded: s3://")


def test_a_store_down_for_good_fails_the_job_and_a_retry_only_publishes(
        tmp_path: Path, model_dir: Path | None) -> None:
    port = free_port()
    settings = outage_settings(tmp_path / "var", model_dir, port, attempts=3)
    with live_api(settings) as client:
        job = client.get(f"/erasures/{submit_direct(settings, 'green', 'abstraction', **QUICK)}").json()
        failed = wait_for(client, job["id"], timeout_s=300)
        assert failed["status"] == "failed" and failed["artifact"] is None
        assert failed["error"].startswith("StoreUnavailable: could not store the artifact after 3 attempts")
        assert client.get(f"{job['url']}/artifact").status_code == 409
        assert len(store_failures(client, job["id"])) == 2  # the third failure is the job's error
        assert (settings.checkpoint_dir / job["id"]).is_dir()  # the training is not lost

        with s3_server(settings, port):
            assert client.post(f"{job['url']}/retry").status_code == 202
            done = wait_for(client, job["id"], timeout_s=120)
            assert done["status"] == "succeeded" and done["attempts"] == 2
            assert_stored_and_verified(client, settings, done)
        events = all_events(client, job["id"])
        retry_at = next(i for i, e in enumerate(events) if e["message"] == "queued again (retry)")
        assert not [e for e in events[retry_at:] if e["kind"] == "metrics"], "the retry trained again"

