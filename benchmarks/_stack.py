"""What the service benchmarks share: a fresh PostgreSQL database, `zerase serve` / `zerase worker`
subprocesses, an admin key, and open-loop request pacing with latency summaries."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from cli.demo import free_port
from service.audit.service import Actor
from service.core.db import migrate
from service.keys.service import issue_key

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REPO = Path(__file__).resolve().parents[1]


@contextmanager
def fresh_database(prefix: str = "zerase_bench") -> Iterator[str]:
    """A new PostgreSQL database at head (Alembic), dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def admin_key(database_url: str) -> dict[str, str]:
    _, secret = issue_key(database_url, "benchmark", "admin", Actor("benchmark"))
    return {"Authorization": f"Bearer {secret}"}


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", *command], cwd=REPO, env=os.environ | env,
                                stdout=out, stderr=subprocess.STDOUT)


def serve(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`zerase serve` on a free port, once /healthz answers; returns the process and its base URL."""
    port = free_port()
    proc = start(["serve", "--port", str(port)], env, log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"zerase serve did not start; see {log}")
        time.sleep(0.3)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def run_at_rate(send: Callable[[int], None], rate: float, seconds: float,
                until: Callable[[], bool] = lambda: False) -> list[float]:
    """Open loop: request i starts at i/rate (or at once if late); stops after `seconds` or `until()`."""
    latencies, interval, start_t = [], 1.0 / rate, time.perf_counter()
    for i in range(int(rate * seconds)):
        if until():
            break
        delay = start_t + i * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        send(i)
        latencies.append(time.perf_counter() - t)
    return latencies


def summary(name: str, lat: list[float], seconds: float) -> str:
    s = sorted(lat)
    p99 = s[min(len(s) - 1, int(0.99 * len(s)))]
    return (f"{name:<22} {len(s) / seconds:6.1f} req/s  p50 {statistics.median(s) * 1000:7.1f} ms  "
            f"p99 {p99 * 1000:7.1f} ms  max {s[-1] * 1000:7.1f} ms")
