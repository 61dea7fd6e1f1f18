"""Metrics and logs as an operator sees them: GET /metrics on PostgreSQL (jobs by status, the active
version, HTTP requests by route), a database that is down or silent (the scrape still answers, fast),
JSON log lines carrying the job id while run_job runs, and a real `zerase worker` exporting its step
counter on ZERASE_WORKER_METRICS_PORT with JSON logs."""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from jobclient import settings_env
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text, update
from sqlalchemy.engine import make_url

from api.app import create_app
from cli.demo import free_port
from service.core.db import engine_for, migrate, session_factory
from service.core.logs import configure_logging
from service.core.settings import Settings
from service.deployments.models import ActiveDeployment, Deployment
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob
from service.erasures.runner import run_job
from service.erasures.service import JobSpec, resolve_config
from worker.dispatch import CeleryDispatcher, hand_over

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def database_url(postgres_url: str) -> Iterator[str]:
    """A database of this module's own (schema by Alembic): exact counts, and no other test's sweeper or
    worker picks up the jobs made here."""
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    name = f"zerase_obs_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_url).set(database=name).render_as_string(hide_password=False)
    try:
        migrate(url)
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def scrape(text_format: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value}, parsed by prometheus_client's own parser."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text_format) for s in family.samples}


def add_job(url: str, status: JobStatus, config: dict[str, Any] | None = None) -> str:
    with session_factory(url)() as db:
        job = ErasureJob(status=status, concept="red", category="abstraction", config=config or {},
                         requested_by="test")
        db.add(job)
        db.commit()
        return job.id


def test_metrics_count_jobs_by_status_and_show_the_active_version(database_url: str, tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, database_url=database_url, embedded_worker=False)
    with TestClient(create_app(settings)) as client:
        empty = scrape(client.get("/metrics").text)
        assert empty[("zerase_metrics_db_up", ())] == 1
        assert all(empty[("zerase_erasure_jobs", (("status", s.value),))] == 0 for s in JobStatus)
        assert empty[("zerase_active_deployment_version", ())] == 0  # the base model

        for status in [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED]:
            add_job(database_url, status)
        with session_factory(database_url)() as db:
            deployment = Deployment(entries=[], created_by="test")
            db.add(deployment)
            db.flush()
            db.execute(update(ActiveDeployment).where(ActiveDeployment.id == 1).values(version=deployment.version))
            db.commit()

        client.get("/healthz")
        response = client.get("/metrics")  # no credentials: public, like /healthz
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain; version=")  # the text exposition format
        samples = scrape(response.text)
        jobs = {s.value: samples[("zerase_erasure_jobs", (("status", s.value),))] for s in JobStatus}
        assert jobs == {"queued": 2, "running": 1, "succeeded": 0, "failed": 1, "cancelled": 0}
        assert samples[("zerase_active_deployment_version", ())] == deployment.version
        # Requests are labelled by route template, never by the raw path.
        healthz = ("zerase_http_requests_total", (("method", "GET"), ("route", "/healthz"), ("status", "200")))
        assert samples[healthz] >= 1
        client.get(f"/erasures/er_{secrets.token_hex(8)}")
        client.get("/no/such/path")
        routes = {dict(labels)["route"] for (name, labels) in scrape(client.get("/metrics").text)
                  if name == "zerase_http_requests_total"}
        assert "/erasures/{job_id}" in routes and "unmatched" in routes
        assert not any(r.startswith("/erasures/er_") or r == "/no/such/path" for r in routes)
        assert ("process_cpu_seconds_total", ()) in samples  # the process collector is there too


def test_a_database_that_is_down_or_silent_does_not_break_the_scrape(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens there: connection refused at once
    silent = socket.socket()  # accepts TCP connections (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        for port in (closed, silent.getsockname()[1]):
            settings = Settings(var_dir=tmp_path, database_url=f"postgresql+psycopg://zerase@127.0.0.1:{port}/zerase",
                                embedded_worker=False)
            with TestClient(create_app(settings)) as client:
                started = time.monotonic()
                response = client.get("/metrics")
                took = time.monotonic() - started
                assert response.status_code == 200, response.text
                samples = scrape(response.text)
                assert samples[("zerase_metrics_db_up", ())] == 0
                assert not any(name == "zerase_erasure_jobs" for name, _ in samples)
                assert ("zerase_training_steps_total", ()) in samples  # process metrics still answer
                assert took < 8, f"the scrape took {took:.1f}s with the database at port {port}"
                assert client.get("/healthz").status_code == 200
    finally:
        silent.close()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The service's logging, as `zerase serve` sets it up with ZERASE_LOG_FORMAT=json, into a buffer; and
    SQLAlchemy's statement log on, a library logging while the job runs."""
    stream = io.StringIO()
    configure_logging("json", "INFO", stream=stream)
    sql = logging.getLogger("sqlalchemy.engine.Engine")
    sql.setLevel(logging.INFO)
    yield stream
    sql.setLevel(logging.NOTSET)
    root = logging.getLogger()
    for handler in [h for h in root.handlers if h.get_name() == "zerase"]:
        root.removeHandler(handler)
    root.setLevel(logging.WARNING)
    logging.captureWarnings(False)


def test_run_job_logs_json_lines_with_the_job_id_and_counts_its_steps(
        database_url: str, tmp_path: Path, model_dir: Path | None, json_log: io.StringIO) -> None:
    settings = Settings(var_dir=tmp_path, database_url=database_url, model_dir=model_dir, embedded_worker=False,
                        heartbeat_interval_s=0.1, progress_interval_s=0.1, evaluate_jobs=False)
    spec = JobSpec(concept="circle", category="entity", preservation=None, anchor=None, epsilon=None,
                   overrides={"steps": 3}, reason=None, requested_by="test")
    job_id = add_job(database_url, JobStatus.QUEUED, resolve_config(spec, model_dir))
    steps_before = REGISTRY.get_sample_value("zerase_training_steps_total") or 0
    log = logging.getLogger("tests.observability")

    log.info("before")
    assert run_job(job_id, settings) == JobStatus.SUCCEEDED
    log.info("after")

    assert REGISTRY.get_sample_value("zerase_training_steps_total") == steps_before + 3
    lines = [json.loads(line) for line in json_log.getvalue().splitlines()]
    messages = [line["message"] for line in lines]
    first, last = messages.index("before"), messages.index("after")
    assert lines[first]["job_id"] is None and lines[last]["job_id"] is None  # outside the job: null
    during = lines[first + 1:last]
    assert during and all(line["job_id"] == job_id for line in during), [
        line for line in during if line["job_id"] != job_id][:3]
    assert {"time", "level", "logger", "message"} <= set(during[0])
    loggers = {line["logger"] for line in during}
    assert "sqlalchemy.engine.Engine" in loggers  # a library's lines carry the id too, not only ours
    assert any(line["logger"] == "service.erasures.lifecycle" and line["message"].startswith("succeeded")
               for line in during)


def test_zerase_worker_exports_its_step_counter_and_logs_json(
        distributed_settings: Settings, database_url: str, model_dir: Path | None, tmp_path: Path) -> None:
    port = free_port()
    settings = distributed_settings.model_copy(update={
        "database_url": database_url, "queue_name": f"{distributed_settings.queue_name}-obs",
        "log_format": "json", "worker_metrics_port": port, "var_dir": tmp_path})
    log_path = tmp_path / "worker.log"
    env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as out:
        worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], cwd=REPO, env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while " ready." not in log_path.read_text(errors="replace"):
            assert worker.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
            time.sleep(0.2)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        assert scrape(httpx.get(metrics_url).text)[("zerase_training_steps_total", ())] == 0

        spec = JobSpec(concept="square", category="entity", preservation=None, anchor=None, epsilon=None,
                       overrides={"steps": 2}, reason=None, requested_by="test")
        job_id = add_job(database_url, JobStatus.QUEUED, resolve_config(spec, model_dir))
        hand_over(CeleryDispatcher(settings), session_factory(database_url), job_id)
        deadline = time.monotonic() + 180
        while (status := job_status(database_url, job_id)) not in ("succeeded", "failed", "cancelled"):
            assert worker.poll() is None and time.monotonic() < deadline, f"job still {status}"
            time.sleep(0.3)
        assert status == "succeeded", log_path.read_text()[-3000:]
        assert scrape(httpx.get(metrics_url).text)[("zerase_training_steps_total", ())] == 2
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    text_lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    # No banner, no progress bars, no printed warnings: JSON lines only, but for the notice Celery prints
    # (not logs) when it stops; a last log line may still follow it.
    assert [line for line in text_lines if not line.startswith("{")] == ["worker: Warm shutdown (MainProcess)"]
    lines = [json.loads(line) for line in text_lines if line.startswith("{")]
    mine = [line["message"] for line in lines if line["job_id"] == job_id]
    assert any(m.startswith("running (attempt 1)") for m in mine), mine
    assert any(m.startswith("succeeded") for m in mine), mine
    assert any(line["message"].endswith(" ready.") and line["job_id"] is None for line in lines)


def job_status(url: str, job_id: str) -> str:
    with session_factory(url)() as db:
        job = db.get(ErasureJob, job_id)
        assert job is not None
        return job.status


def test_zerase_serve_logs_json_lines_and_serves_metrics_without_credentials(tmp_path: Path) -> None:
    port, log_path = free_port(), tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERASE_")}
    env |= {"ZERASE_VAR_DIR": str(tmp_path / "var"), "ZERASE_LOG_FORMAT": "json", "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as out:
        serve = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], cwd=REPO,
                                 env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            deadline = time.monotonic() + 120
            while True:
                assert serve.poll() is None and time.monotonic() < deadline, log_path.read_text()[-3000:]
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.3)
            metrics = client.get("/metrics")
            assert metrics.status_code == 200
            assert scrape(metrics.text)[("zerase_metrics_db_up", ())] == 1  # the embedded SQLite database
    finally:
        serve.send_signal(signal.SIGINT)
        serve.wait(timeout=60)

    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]  # JSON, every one
    assert any(line["logger"] == "cli.main" and "routes all" in line["message"] for line in lines)
    access = [line["message"] for line in lines if line["logger"] == "uvicorn.access"]
    assert any('"GET /metrics HTTP/1.1" 200' in message for message in access), access
    assert all(line["job_id"] is None for line in lines)
    assert not any("color_message" in line for line in lines)  # uvicorn's ANSI-coloured copy is left out
