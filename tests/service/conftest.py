"""Fixtures of the real services the service tests run against: PostgreSQL (a fresh database made
by Alembic), Redis (a key prefix and queue of their own), a moto S3 server, Celery worker
processes, and the API itself on a loopback port.

A missing service fails the tests that need it, with the reason: nothing is skipped.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from jobclient import WorkerFactory, settings_env
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from cli.demo import free_port
from service.core.db import engine_for, migrate
from service.core.settings import Settings
from service.core.store import s3_client

# The suite's many synthetic succeeded jobs (recorded directly, or trained in a few steps) have no evaluation
# that passes the deploy gate; the gate's own tests (test_deploy_gate.py) turn it on.
os.environ.setdefault("ZERASE_DEPLOY_GATE", "false")
# A job that misses the gate trains once here (a test's verdict is about the round it asked for); test_retune.py
# tests the service's default, training again along the null-space ladder.
os.environ.setdefault("ZERASE_RETUNE_ROUNDS", "0")
# Several erasures are served as their 1/N stack here, activated at once; tests of the fused patch use the
# service's default, ZERASE_FUSION=routed (a worker makes its fallback patch before the version is served).
os.environ.setdefault("ZERASE_FUSION", "average")
# One image of each kept concept per job evaluation (the default, 8, costs ~100 more images a job): the suite's many
# short jobs stay fast; tests of the per-concept gate ask for more.
os.environ.setdefault("ZERASE_EVALUATION_KEPT_IMAGES", "1")

POSTGRES_ADMIN_URL = os.environ.get("ZERASE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("ZERASE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
BUCKET = "zerase-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def model_dir() -> Path | None:
    """The model the workers train on: ZERASE_MODEL_DIR if set, else the bundled tiny model."""
    from zerase.model.profiles import BUNDLED_MODEL_DIR

    configured = Settings().model_dir
    path = configured or BUNDLED_MODEL_DIR
    if not (path / "model_index.json").exists():
        pytest.fail(f"no model at {path}: build the bundled model (`zerase world build`) or set "
                    "ZERASE_MODEL_DIR", pytrace=False)
    return configured


@contextmanager
def empty_postgres_database() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped on exit."""
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        conn = admin.connect()
    except OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc.orig}); these tests need a "
                    "real server (set ZERASE_TEST_POSTGRES_URL to use another)", pytrace=False)
    name = f"zerase_test_{secrets.token_hex(4)}"
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        engine_for(url).dispose()
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.close()
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test session, schema by `alembic upgrade head`, dropped after."""
    with empty_postgres_database() as url:
        migrate(url)
        yield url


@pytest.fixture(scope="session")
def redis_prefix() -> Iterator[str]:
    """A key prefix (and queue name) of this session's own; its keys are deleted after."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}); these tests need a real server "
                    "(set ZERASE_TEST_REDIS_URL to use another)", pytrace=False)
    prefix = f"zerase_test_{secrets.token_hex(4)}"
    yield prefix
    for key in client.scan_iter(match=f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on a free loopback port (a real HTTP S3 API, as MinIO would be)."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def distributed_settings(tmp_path_factory: pytest.TempPathFactory, model_dir: Path | None, postgres_url: str,
                         redis_prefix: str, s3_endpoint: str) -> Settings:
    """Production-shaped: Postgres, Redis broker, S3 store; short intervals so tests see heartbeats."""
    settings = Settings(
        var_dir=tmp_path_factory.mktemp("distributed-var"), model_dir=model_dir, database_url=postgres_url,
        broker_url=REDIS_URL, queue_name=redis_prefix, broker_key_prefix=f"{redis_prefix}:",
        artifact_store_url=f"s3://{BUCKET}/erasures", s3_endpoint_url=s3_endpoint, s3_access_key_id="testing",
        s3_secret_access_key="testing", progress_interval_s=0.5, metrics_event_interval_s=1.0,
        checkpoint_every=2, heartbeat_interval_s=1.0, stale_after_s=6.0, sweep_interval_s=1.0,
        evaluate_jobs=False)  # test_evaluation.py has it on
    s3_client(settings).create_bucket(Bucket=BUCKET)
    return settings


@pytest.fixture(scope="session")
def start_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerFactory]:
    """Start `zerase worker` processes (real Celery workers); all are stopped at the end of the session."""
    logs = tmp_path_factory.mktemp("worker-logs")
    started: list[subprocess.Popen[bytes]] = []

    def start(settings: Settings, name: str) -> subprocess.Popen[bytes]:
        log_path = logs / f"{name}.log"
        env = {**os.environ, **settings_env(settings), "PYTHONPATH": str(REPO)}
        with log_path.open("wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--loglevel=INFO"],
                                    cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        deadline = time.monotonic() + 120
        while " ready." not in log_path.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"celery worker did not start:\n{log_path.read_text(errors='replace')[-3000:]}",
                            pytrace=False)
            time.sleep(0.2)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def celery_worker(start_worker: WorkerFactory, distributed_settings: Settings) -> subprocess.Popen[bytes]:
    return start_worker(distributed_settings, "main")
