"""Helpers the service tests share: run the API on a loopback port, talk to it as a client would."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from pydantic import SecretStr

from api.app import create_app
from api.limits import SERVER_HEADER_BYTES, SERVER_KEEP_ALIVE_S
from cli.demo import free_port
from service.core.db import session_factory
from service.core.settings import Settings
from service.core.tables import utcnow
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob, new_job_id

FINISHED = ("succeeded", "failed", "cancelled")
REPO = Path(__file__).resolve().parents[2]
WorkerFactory = Callable[[Settings, str], "subprocess.Popen[bytes]"]


T = TypeVar("T")


def settings_env(settings: Settings) -> dict[str, str]:
    """The ZERASE_* environment that makes another process build these same settings."""
    env = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, Path):
            value = str(value.resolve())
        env[f"ZERASE_{name.upper()}"] = str(value)
    return env


def api_key(settings: Settings, role: str = "admin", name: str = "test-admin") -> str:
    """A new API key on the settings' database (schema brought to head first), as `zerase keys create`."""
    from service.audit.service import Actor
    from service.core.db import migrate
    from service.keys.service import issue_key

    migrate(settings.database_url)
    return issue_key(settings.database_url, name, role, Actor("tests"))[1]


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@contextmanager
def live_api(settings: Settings, role: str = "admin") -> Iterator[httpx.Client]:
    """The app under a real uvicorn server (thread of this process); a client bound to it that
    authenticates with a new key of `role`."""
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning",
                            h11_max_incomplete_event_size=SERVER_HEADER_BYTES,  # as `zerase serve` does
                            timeout_keep_alive=SERVER_KEEP_ALIVE_S)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        headers = bearer(api_key(settings, role, f"test-{role}"))
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30, headers=headers) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=90)


def start_serve(env: dict[str, str], log: Path,
                headers: dict[str, str]) -> tuple[subprocess.Popen[bytes], httpx.Client]:
    """`zerase serve` as a subprocess with `env` (its output appended to `log`), once /readyz answers 200;
    a client bound to it with `headers`. The caller stops both."""
    port = free_port()
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], cwd=REPO,
                                env=env, stdout=out, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers=headers)
    deadline = time.monotonic() + 120
    while True:
        assert proc.poll() is None, f"zerase serve exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"zerase serve not ready:\n{log.read_text()[-3000:]}"
        try:
            if client.get("/readyz").status_code == 200:
                return proc, client
        except httpx.TransportError:
            pass
        time.sleep(0.3)


def submit(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/erasures", json=body)
    assert response.status_code == 202, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == job["url"] == f"/erasures/{job['id']}"
    return job


def wait_for(client: httpx.Client, job_id: str, statuses: tuple[str, ...] = FINISHED, timeout_s: float = 300,
             min_step: int = 0) -> dict[str, Any]:
    """Poll until the job is in one of `statuses` (and, if asked, has reported step >= min_step)."""
    deadline = time.monotonic() + timeout_s
    while True:
        job: dict[str, Any] = client.get(f"/erasures/{job_id}").json()
        step = (job["progress"] or {}).get("step", 0)
        if job["status"] in statuses and step >= min_step:
            return job
        assert job["status"] not in FINISHED or job["status"] in statuses, f"job ended {job['status']}: {job}"
        assert time.monotonic() < deadline, f"job still {job['status']} (step {step}) after {timeout_s}s"
        time.sleep(0.2)


def all_events(client: httpx.Client, job_id: str, limit: int = 100) -> list[dict[str, Any]]:
    """Every event of a job, following the cursor."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/erasures/{job_id}/events", params=params).json()
        events += page["data"]
        if not page["has_more"]:
            return events
        cursor = page["next_cursor"]


# An evaluation that passes the default deploy gate (Acc_e 0, nothing kept lost).
PASSING_EVALUATION = {"status": "evaluated", "acc_e": 0.0, "acc_ir_before": 0.9, "acc_ir": 0.9}


def make_job(settings: Settings, status: JobStatus = JobStatus.SUCCEEDED, concept: str = "red",
             evaluation: dict[str, Any] | None = None) -> str:
    """A finished job row as the worker leaves it (the artifact itself is not needed here); with no
    `evaluation` the deploy gate refuses it."""
    job_id = new_job_id()
    sha = job_id[3:].ljust(64, "0")
    with session_factory(settings.database_url)() as db:
        db.add(ErasureJob(id=job_id, status=status, concept=concept, category="abstraction", config={},
                          requested_by="test", finished_at=utcnow(), evaluation=evaluation,
                          **({"artifact_uri": (Path("/nowhere") / sha).as_uri(), "artifact_sha256": sha,
                              "artifact_bytes": 1} if status == JobStatus.SUCCEEDED else {})))
        db.commit()
    return job_id


def submit_direct(settings: Settings, concept: str, category: str, **overrides: Any) -> str:
    """A queued job with settings the API does not take (lr, trajectories: a few seconds of training instead
    of a minute), through the job service as the API submits; an embedded worker finds it by polling."""
    from service.erasures import service as jobs

    spec = jobs.JobSpec(concept=concept, category=category, preservation=None, anchor=None, epsilon=None,
                        overrides=overrides, reason="test", requested_by="test")
    with session_factory(settings.database_url)() as db:
        return jobs.submit(db, spec, settings.model_dir, lambda job: {}, training=settings.training_defaults).job_id


def all_events_direct(settings: Settings, job_id: str) -> list[Any]:
    """The job's events read from the database (for tests that drive the worker side directly)."""
    from sqlalchemy import select

    from service.erasures.models import JobEvent

    with session_factory(settings.database_url)() as db:
        return list(db.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.id)))


def at_once(*calls: Callable[[], T]) -> list[T]:
    """Run the calls on threads released together."""
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]
