"""The control plane while /generate is flooded: `zerase serve` (all routes, PostgreSQL), N generator
clients posting /generate back to back, and a moderator's GET /erasures at a fixed rate meanwhile.

Prints the moderator's p50/p99/max and error counts, and how /generate answered (200, 429...).
`--repo DIR --entry service.cli` runs another checkout's server (e.g. an older commit, for a before/after
figure); the database and keys are made by this checkout.

    python benchmarks/control_under_flood.py [--clients 45] [--seconds 40]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
from _stack import REPO, fresh_database, run_at_rate, summary

from cli.demo import free_port
from service.audit.service import Actor
from service.keys.service import issue_key


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=45)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--rate", type=float, default=5.0, help="moderator requests per second")
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--entry", default="cli.main", help="the module with the `serve` command")
    args = parser.parse_args()
    with fresh_database("zerase_flood") as db_url, tempfile.TemporaryDirectory() as var:
        moderator = issue_key(db_url, "moderator", "moderator", Actor("benchmark"))[1]
        generators = [issue_key(db_url, f"gen-{i}", "generator", Actor("benchmark"))[1] for i in range(3)]
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ZERASE_")} | {
            "ZERASE_DATABASE_URL": db_url, "ZERASE_VAR_DIR": var, "ZERASE_AUTO_MIGRATE": "false",
            "ZERASE_EMBEDDED_WORKER": "false", "ZERASE_LOG_LEVEL": "WARNING"}
        log = Path(var) / "serve.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", args.entry, "serve", "--port", str(port)], cwd=args.repo,
                                    env=env, stdout=out, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, proc)
            body = {"prompt": "a red circle", "width": 64, "height": 64}
            with httpx.Client(base_url=url, timeout=120) as warm:  # the model loads on the first request
                warm.post("/generate", json=body, headers={"Authorization": f"Bearer {generators[0]}"})
            print(f"server: {args.entry} in {args.repo}; {args.clients} /generate clients for {args.seconds:.0f}s")
            measure(url, moderator, args.rate, 10, "control alone")
            stop, answers = threading.Event(), Counter[str]()
            threads = [threading.Thread(target=flood, args=(url, generators[i % 3], body, stop, answers))
                       for i in range(args.clients)]
            for t in threads:
                t.start()
            time.sleep(2)  # let the flood build up
            measure(url, moderator, args.rate, args.seconds, "control during flood")
            stop.set()
            for t in threads:
                t.join(timeout=180)
            print(f"/generate answers: {dict(sorted(answers.items()))}")
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit("zerase serve did not start")


def flood(url: str, key: str, body: dict[str, object], stop: threading.Event, answers: Counter[str]) -> None:
    with httpx.Client(base_url=url, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        seed = 0
        while not stop.is_set():
            try:
                r = client.post("/generate", json={**body, "seed": seed})
                answers[str(r.status_code)] += 1
                if r.status_code == 429:
                    time.sleep(float(r.headers.get("retry-after", "1")))
            except httpx.HTTPError as exc:
                answers[type(exc).__name__] += 1
            seed += 1


def measure(url: str, key: str, rate: float, seconds: float, name: str) -> None:
    statuses: Counter[str] = Counter()
    end = time.monotonic() + seconds
    # A request that takes over 30 s counts as a timeout; the measurement ends on time regardless.
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as client:
        def send(_: int) -> None:
            try:
                statuses[str(client.get("/erasures", params={"limit": 5}).status_code)] += 1
            except httpx.HTTPError as exc:
                statuses[type(exc).__name__] += 1

        latencies = run_at_rate(send, rate, seconds, until=lambda: time.monotonic() > end)
    print(summary(name, latencies, seconds), f" answers {dict(sorted(statuses.items()))}")


if __name__ == "__main__":
    main()
