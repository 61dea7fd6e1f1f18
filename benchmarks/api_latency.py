"""API latency of `POST /erasures` and `GET /erasures/{id}` at a fixed request rate, on loopback,
against PostgreSQL (127.0.0.1:5432, a fresh database made by Alembic and dropped afterwards).

    python benchmarks/api_latency.py [--rate 20] [--seconds 10]

The API runs as `zerase serve` in a subprocess with no worker (jobs stay queued: this measures
the API and the database, not training). Requests are sent open-loop on a fixed schedule from
one client thread, with an admin key; a request that would start late starts at once.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import httpx
from _stack import admin_key, fresh_database, run_at_rate, serve, stop, summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with fresh_database() as url, tempfile.TemporaryDirectory() as var:
        env = {"ZERASE_DATABASE_URL": url, "ZERASE_EMBEDDED_WORKER": "false", "ZERASE_AUTO_MIGRATE": "false",
               "ZERASE_VAR_DIR": var, "ZERASE_MAX_ACTIVE_JOBS_PER_KEY": "100000",  # one key, many queued jobs
               "ZERASE_MAX_ACTIVE_COST_PER_KEY": "1000000000"}
        server, base = serve(env, Path(var) / "serve.log")
        try:
            with httpx.Client(base_url=base, timeout=30, headers=admin_key(url)) as client:
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
        finally:
            stop(server)
    print(f"PostgreSQL on loopback, target {args.rate:g} req/s for {args.seconds:g} s each, one client")
    print(summary("POST /erasures", post_lat, args.seconds))
    print(summary("GET /erasures/{id}", get_lat, args.seconds))


if __name__ == "__main__":
    main()
