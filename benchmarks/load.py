"""A bounded load run on loopback: N erasure requests at once, then a fixed-rate status poll while
one Celery worker processes the queue for a fixed time; then it stops by itself, cancels what is
left and checks that nothing was lost, doubled or run out of order.

    python benchmarks/load.py [--jobs 1000] [--clients 16] [--seconds 120] [--poll-rate 20] [--steps 1]

Real parts: `zerase serve` and `zerase worker` subprocesses, PostgreSQL (a fresh database, dropped
after), Redis as the broker (127.0.0.1:6379, keys and queue of the run's own, deleted after), a
file artifact store. Jobs train `--steps` steps each, without the per-job evaluation, so the run
measures the service rather than training. Prints numbers only.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import redis
from _stack import admin_key, fresh_database, run_at_rate, serve, start, stop, summary
from sqlalchemy import func, select

from service.core.db import session_factory
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob, JobEvent

REDIS_URL = "redis://127.0.0.1:6379/0"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16, help="concurrent submitters")
    parser.add_argument("--seconds", type=float, default=120.0, help="how long the worker processes")
    parser.add_argument("--poll-rate", type=float, default=20.0, help="GET /erasures/{id} per second meanwhile")
    parser.add_argument("--steps", type=int, default=1)
    args = parser.parse_args()
    prefix = f"zerase_load_{uuid.uuid4().hex[:8]}"
    with fresh_database("zerase_load") as url, tempfile.TemporaryDirectory() as var:
        env = {"ZERASE_DATABASE_URL": url, "ZERASE_AUTO_MIGRATE": "false", "ZERASE_VAR_DIR": var,
               "ZERASE_BROKER_URL": REDIS_URL, "ZERASE_QUEUE_NAME": prefix, "ZERASE_BROKER_KEY_PREFIX": f"{prefix}:",
               "ZERASE_EVALUATE_JOBS": "false", "ZERASE_PROGRESS_INTERVAL_S": "5",
               # One key submits every job: the per-key quota would (rightly) refuse most of them.
               "ZERASE_MAX_ACTIVE_JOBS_PER_KEY": "100000", "ZERASE_MAX_ACTIVE_COST_PER_KEY": "1000000000"}
        server, base = serve(env, Path(var) / "serve.log")
        worker = None
        try:
            with httpx.Client(base_url=base, timeout=60, headers=admin_key(url),
                              limits=httpx.Limits(max_connections=args.clients)) as client:
                ids, submit_s, submit_lat = submit_all(client, args.jobs, args.clients, args.steps)
                sessions = session_factory(url)
                with sessions() as db:
                    persisted = db.scalar(select(func.count()).select_from(ErasureJob))
                print(f"submitted {args.jobs} erasures with {args.clients} clients in {submit_s:.1f} s "
                      f"({args.jobs / submit_s:.0f} req/s); accepted {len(ids)}, persisted {persisted}")
                print(summary("POST /erasures (burst)", submit_lat, submit_s))

                worker = start(["worker"], env, Path(var) / "worker.log")
                started = time.monotonic()
                done = threading.Event()
                polls = run_at_rate(lambda i: client.get(f"/erasures/{ids[i % len(ids)]}").raise_for_status(),
                                    args.poll_rate, args.seconds, until=done.is_set)
                elapsed = time.monotonic() - started
                print(summary("GET /erasures/{id} (poll)", polls, elapsed))
                stop(worker)
                worker = None
                report(sessions, client, ids, elapsed)
        finally:
            for proc in (worker, server):
                if proc is not None:
                    stop(proc)
            broker = redis.Redis.from_url(REDIS_URL)
            for key in broker.scan_iter(match=f"{prefix}*"):
                broker.delete(key)


def submit_all(client: httpx.Client, n: int, clients: int, steps: int) -> tuple[list[str], float, list[float]]:
    def post(i: int) -> tuple[str, float]:
        t = time.perf_counter()
        r = client.post("/erasures", json={"concept": f"logo {i}", "category": "custom", "steps": steps,
                                           "preservation": ["a dog", "a red circle"]},
                        headers={"Idempotency-Key": f"load-{i}"})
        r.raise_for_status()
        return r.json()["id"], time.perf_counter() - t

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(post, range(n)))
    return [job_id for job_id, _ in results], time.perf_counter() - t0, [lat for _, lat in results]


def report(sessions, client: httpx.Client, ids: list[str], elapsed: float) -> None:
    with sessions() as db:
        jobs = list(db.scalars(select(ErasureJob).where(ErasureJob.id.in_(ids))))
        succeeded_events = dict(db.execute(
            select(JobEvent.job_id, func.count()).where(JobEvent.kind == "state", JobEvent.message.like("succeeded%"))
            .group_by(JobEvent.job_id)).all())
    by_status: dict[str, int] = {}
    for job in jobs:
        by_status[job.status] = by_status.get(job.status, 0) + 1
    done = sorted((j for j in jobs if j.status == JobStatus.SUCCEEDED), key=lambda j: j.started_at)
    print(f"after {elapsed:.0f} s of processing: {by_status}; {len(done) / elapsed:.2f} jobs/s")
    # Order: the rank of each job in enqueue order against the rank in which it started.
    enqueue_rank = {j.id: r for r, j in enumerate(sorted(jobs, key=lambda j: (j.enqueued_at, j.id)))}
    displacement = [abs(enqueue_rank[j.id] - r) for r, j in enumerate(done)]
    in_prefix = all(enqueue_rank[j.id] < len(done) + 16 for j in done)  # the first accepted ran first
    print(f"order: max displacement {max(displacement, default=0)} places (the submitters were concurrent), "
          f"every processed job among the first accepted: {in_prefix}")
    twice = [j.id for j in done if succeeded_events.get(j.id, 0) != 1 or j.attempts != 1]
    print(f"exactly once: {len(done) - len(twice)}/{len(done)} succeeded with one attempt and one succeeded event")

    t = time.perf_counter()
    left = [j.id for j in jobs if j.status == JobStatus.QUEUED]
    for job_id in left:
        client.post(f"/erasures/{job_id}/cancel").raise_for_status()
    with sessions() as db:
        final = dict(db.execute(select(ErasureJob.status, func.count()).where(ErasureJob.id.in_(ids))
                                .group_by(ErasureJob.status)).all())
    print(f"cancelled the {len(left)} still queued in {time.perf_counter() - t:.1f} s; final {final}; "
          f"lost: {len(ids) - sum(final.values())}")


if __name__ == "__main__":
    main()
