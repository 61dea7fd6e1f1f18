"""API latency of `POST /erasures` and `GET /erasures/{id}` at a fixed request rate, on loopback,
against PostgreSQL (127.0.0.1:5432, a fresh database made by Alembic and dropped afterwards).

    python benchmarks/api_latency.py [--rate 20] [--seconds 10]

The API runs as `zerase serve` in a subprocess with no worker (jobs stay queued: this measures
the API and the database, not training). Requests are sent open-loop on a fixed schedule from
one client thread; a request that would start late starts at once. Prints numbers only.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid

import httpx
from sqlalchemy import create_engine, text

from service.db import migrate
from service.demo import free_port

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def run_at_rate(send, rate: float, seconds: float) -> list[float]:
    latencies, interval, start = [], 1.0 / rate, time.perf_counter()
    for i in range(int(rate * seconds)):
        delay = start + i * interval - time.perf_counter()
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    name = f"zerase_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    migrate(url)
    port = free_port()
    env = os.environ | {"ZERASE_DATABASE_URL": url, "ZERASE_EMBEDDED_WORKER": "false", "ZERASE_AUTO_MIGRATE": "false",
                        "ZERASE_VAR_DIR": f"/tmp/{name}"}
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            for _ in range(120):
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
            ids: list[str] = []

            def post(i: int) -> None:
                r = client.post("/erasures", json={"concept": f"concept {i}", "category": "custom",
                                                   "preservation": ["a dog"], "steps": 10})
                r.raise_for_status()
                ids.append(r.json()["id"])

            def get(i: int) -> None:
                client.get(f"/erasures/{ids[i % len(ids)]}").raise_for_status()

            post_lat = run_at_rate(post, args.rate, args.seconds)
            get_lat = run_at_rate(get, args.rate, args.seconds)
        print(f"PostgreSQL on loopback, target {args.rate:g} req/s for {args.seconds:g} s each, one client")
        print(summary("POST /erasures", post_lat, args.seconds))
        print(summary("GET /erasures/{id}", get_lat, args.seconds))
    finally:
        server.terminate()
        server.wait(timeout=30)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


if __name__ == "__main__":
    main()
