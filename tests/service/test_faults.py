"""Faults, for real: the database cut away from a running service, a Redis broker crashing with jobs
queued and running, and `zerase serve` restarted while a deployment is active. Each test starts and
stops the real processes (or cuts the real connections) and checks that nothing is lost or doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from faults import RedisServer, TcpProxy
from jobclient import FINISHED, WorkerFactory, all_events, api_key, bearer, live_api, start_serve, submit, wait_for
from sqlalchemy.engine import make_url

from cli.demo import free_port
from service.core.settings import Settings

pytestmark = pytest.mark.minutes(2.6)  # scheduled first (tests/conftest.py)

PROBLEM = "application/problem+json"


def state_messages(client: httpx.Client, job_id: str) -> list[str]:
    return [e["data"]["status"] for e in all_events(client, job_id) if e["kind"] == "state"]


def test_database_down_is_a_503_and_recovery_needs_no_restart(
        tmp_path: Path, postgres_url: str, model_dir: Path | None) -> None:
    """PostgreSQL behind a proxy that is cut mid-job: requests get a fast 503 problem (never a hang or
    a 500), and once it is back the same API process and its worker thread carry on."""
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).restore()
    settings = Settings(var_dir=tmp_path, model_dir=model_dir, progress_interval_s=0.3, checkpoint_every=2,
                        evaluate_jobs=False,
                        heartbeat_interval_s=0.5, stale_after_s=4.0, sweep_interval_s=1.0,
                        database_url=url.set(port=proxy.port).render_as_string(hide_password=False))
    with live_api(settings, role="moderator") as client:
        job = submit(client, concept="triangle", category="entity", steps=16)
        wait_for(client, job["id"], ("running",), min_step=4)
        proxy.cut()
        for method, path in (("GET", f"/erasures/{job['id']}"), ("GET", "/erasures"), ("POST", "/erasures")):
            started = time.monotonic()
            r = client.request(method, path, json={"concept": "red", "category": "abstraction"})
            assert time.monotonic() - started < 20, "a request hung on the dead database"
            assert r.status_code == 503 and r.headers["content-type"] == PROBLEM, r.text
            assert r.json()["code"] == "database_unavailable" and r.headers["retry-after"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["database"] != "ok"
        assert client.get("/healthz").status_code == 200  # alive, just not ready
        time.sleep(2)  # the worker thread meets the outage too (progress writes, heartbeats)

        proxy.restore()
        done = wait_for(client, job["id"], timeout_s=180)
        assert done["status"] == "succeeded", done
        assert client.get("/readyz").status_code == 200
        again = submit(client, concept="blue", category="abstraction", steps=2)
        assert wait_for(client, again["id"])["status"] == "succeeded"
        states = state_messages(client, job["id"])
        assert states[0] == "queued" and states[-1] == "succeeded" and states.count("succeeded") == 1
    proxy.cut()


def test_redis_crash_loses_no_job_and_runs_none_twice(
        tmp_path: Path, distributed_settings: Settings, start_worker: WorkerFactory) -> None:
    """A broker of its own (persistent, as compose runs it) is killed while one job runs and two wait,
    and a fourth is submitted while it is down; after its restart all four succeed exactly once.

    The database and the S3 store are the session's: the sweepers of every process resend what this
    broker never took, and any worker may run it, as in production."""
    broker = RedisServer(tmp_path / "redis", free_port()).start()
    settings = distributed_settings.model_copy(update={
        "broker_url": broker.url, "queue_name": distributed_settings.queue_name + "-redis-crash"})
    try:
        start_worker(settings, "redis-crash")
        with live_api(settings, role="moderator") as client:
            jobs = [submit(client, concept=c, category="abstraction", steps=10) for c in ("red", "green", "yellow")]
            wait_for(client, jobs[0]["id"], ("running",), min_step=2)
            broker.kill()
            jobs.append(submit(client, concept="purple", category="abstraction", steps=4))  # broker down: still 202
            time.sleep(3)
            broker.start()
            done = [wait_for(client, j["id"], timeout_s=300) for j in jobs]
            for job in done:
                assert job["status"] == "succeeded", job
                states = state_messages(client, job["id"])
                assert states.count("succeeded") == 1 and states[-1] == "succeeded", states
                assert job["artifact"] and client.get(job["artifact"]["url"]).status_code == 200
    finally:
        broker.kill()


def test_restarted_generation_serves_the_active_deployment_and_fails_closed_until_it_can(
        tmp_path: Path, model_dir: Path | None) -> None:
    """`zerase serve` with an erasure deployed is killed; it comes back refusing to generate while the
    artifact cannot be read, then serves the same version, bit-identical at equal seeds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERASE_")}
    # No evaluation, so no deploy gate either (tests/service/test_deploy_gate.py tests it).
    env |= {"ZERASE_VAR_DIR": str(tmp_path / "var"), "ZERASE_EVALUATE_JOBS": "false", "ZERASE_DEPLOY_GATE": "false",
            **({"ZERASE_MODEL_DIR": str(model_dir)} if model_dir else {})}
    settings = Settings(var_dir=tmp_path / "var", model_dir=model_dir, evaluate_jobs=False, deploy_gate=False)
    key = bearer(api_key(settings))
    artifacts = tmp_path / "var" / "artifacts"
    request = {"prompt": "a red circle", "seed": 11}

    proc, client = start_serve(env, tmp_path / "serve.log", key)
    try:
        job = submit(client, concept="red", category="abstraction", steps=40)
        assert wait_for(client, job["id"], FINISHED)["status"] == "succeeded"
        version = client.post(f"/erasures/{job['id']}/deploy").json()["version"]
        first = client.post("/generate", json=request)
        assert first.status_code == 200 and first.headers["x-safety-patch-version"] == str(version)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        client.close()

    # The store and the local patch cache both gone: nothing to apply the patch from.
    hidden = artifacts.rename(tmp_path / "artifacts-away")
    cache = tmp_path / "var" / "patch-cache"
    for cached in cache.glob("*"):
        cached.unlink()
    proc, client = start_serve(env, tmp_path / "serve.log", key)
    try:
        refused = client.post("/generate", json=request)
        assert refused.status_code == 503 and refused.headers["content-type"] == PROBLEM, refused.text
        assert refused.json()["code"] == "safety_patch_unavailable"
        hidden.rename(artifacts)
        served = client.post("/generate", json=request)
        assert served.status_code == 200 and served.headers["x-safety-patch-version"] == str(version)
        assert served.content == first.content
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        client.close()
