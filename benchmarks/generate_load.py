"""`/generate` under load, batching off against batching on, side by side in one run.

Two `zerase serve` processes on one PostgreSQL database (a fresh one, dropped after), one with
ZERASE_GENERATION_MAX_BATCH=1 (one request at a time) and one with the default dynamic batching; the
tiny model at its default size; requests cycle through 8 captions. First, in this process and without
HTTP, one image alone against a batch of 8: the most batching can gain on this machine. Then, for 0 and
20 deployed erasures, interleaved between the two servers:
  - single: sequential requests from one client (the best single-request latency);
  - saturation: 8 concurrent clients (8 keys) back to back for --seconds: throughput;
  - open loop: arrivals at a fixed rate (half the batching server's saturation) for --seconds, bounded in
    count: p50/p99 and the share refused with 429.

    python benchmarks/generate_load.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import torch
from _stack import fresh_database, serve, stop
from generate_endpoint import percentile, record
from generation import random_artifacts
from prometheus_client.parser import text_string_to_metric_families

from service.audit.service import Actor
from service.core.db import session_factory
from service.core.settings import Settings
from service.deployments import service as deployments
from service.keys.service import issue_key
from zerase.model.generate import generate
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for

CLIENTS = 8
# Requests cycle through these, so a batch holds different captions (identical ones are encoded once).
PROMPTS = ["a red circle", "a blue star", "a green square", "a yellow triangle", "an outlined purple circle",
           "Mira", "a small red star", "a large blue square"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--single", type=int, default=20, help="sequential requests for the single-request p50")
    parser.add_argument("--max-wait-ms", type=float, default=Settings().generation_max_wait_ms,
                        help="ZERASE_GENERATION_MAX_WAIT_MS of the batching server")
    args = parser.parse_args()
    with fresh_database("zerase_load") as url, tempfile.TemporaryDirectory() as var:
        settings = Settings(database_url=url, var_dir=Path(var), embedded_worker=False, auto_migrate=False)
        pipe = load_pipeline()
        random_artifacts(pipe, 20, Path(var))
        alone, batched = core_batch_gain(pipe, CLIENTS)
        print(f"in process (no HTTP, unpatched, {torch.get_num_threads()} threads): one image alone "
              f"{alone * 1000:.1f} ms, in a batch of {CLIENTS} {batched * 1000:.1f} ms per image: batching can "
              f"gain at most {alone / batched:.2f}x here")
        del pipe
        ids = record(settings, [Path(var) / f"a{i}.safetensors" for i in range(20)])
        keys = [issue_key(url, f"load-{i}", "generator", Actor("benchmark"))[1] for i in range(CLIENTS)]
        servers = {}
        for name, batch in (("off", "1"), ("on", "8")):
            env = {"ZERASE_DATABASE_URL": url, "ZERASE_VAR_DIR": str(Path(var) / name), "ZERASE_AUTO_MIGRATE": "false",
                   "ZERASE_EMBEDDED_WORKER": "false", "ZERASE_API_ROUTES": "generation", "ZERASE_LOG_LEVEL": "WARNING",
                   "ZERASE_GENERATION_MAX_BATCH": batch, "ZERASE_GENERATION_MAX_WAIT_MS": str(args.max_wait_ms)}
            servers[name] = serve(env, Path(var) / f"serve-{name}.log")
        try:
            admin = Settings(database_url=url)  # deployments are made through the service's own functions
            versions = {0: 0, 20: deploy(admin, ids)}
            print(f"/generate, tiny model at its default size; {CLIENTS} clients; {args.seconds:.0f} s per phase")
            for n, version in versions.items():
                activate(admin, version)
                for _, base in servers.values():
                    warm(base, keys[0], version)
                single = {name: single_p50(base, keys[0], args.single) for name, (_, base) in servers.items()}
                saturation, batches = {}, {}
                for name, (_, base) in servers.items():
                    before = batch_sums(base)
                    saturation[name] = saturate(base, keys, args.seconds)
                    batches[name] = [after - b for after, b in zip(batch_sums(base), before, strict=True)]
                rate = saturation["on"] / 2
                for name, (_, base) in servers.items():
                    lat, refused, sent = open_loop(base, keys, rate, args.seconds)
                    p50, p99 = statistics.median(lat) if lat else float("nan"), percentile(lat, 0.99) if lat else 0
                    print(f"  {n:>2} erasures, batching {name:<3}: single p50 {single[name] * 1000:6.1f} ms | "
                          f"saturation {saturation[name]:6.1f} img/s | open loop at {rate:5.1f}/s: p50 "
                          f"{p50 * 1000:6.1f} ms p99 {p99 * 1000:6.1f} ms ({p99 / single[name]:.2f}x single p50), "
                          f"429 {refused / sent:.1%}")
                size, calls, wait = batches["on"]
                print(f"  {n:>2} erasures: saturation with batching / without: "
                      f"{saturation['on'] / saturation['off']:.2f}x; at saturation with batching: "
                      f"{size / max(calls, 1):.2f} requests per pipeline call, queue wait "
                      f"{wait / max(size, 1) * 1000:.1f} ms per request")
        finally:
            for proc, _ in servers.values():
                stop(proc)


def core_batch_gain(pipe: Any, batch: int, rounds: int = 10) -> tuple[float, float]:
    """Median seconds per image, alone and in a batch of `batch`, in this process (interleaved rounds): the
    bound on what batching can gain over HTTP, where every request also costs work no batch shares."""
    settings = profile_for(None).sampling
    alone, batched = [], []
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    generate(pipe, prompts, list(range(batch)), settings)  # warm-up
    for r in range(rounds):
        t = time.perf_counter()
        generate(pipe, [prompts[r % batch]], [r], settings)
        alone.append(time.perf_counter() - t)
        t = time.perf_counter()
        generate(pipe, prompts, [r] * batch, settings)
        batched.append((time.perf_counter() - t) / batch)
    return statistics.median(alone), statistics.median(batched)


def batch_sums(base: str) -> tuple[float, float, float]:
    """From /metrics: requests batched, pipeline calls, seconds waited in the queue (all since start)."""
    values = {sample.name: sample.value for family in text_string_to_metric_families(httpx.get(f"{base}/metrics").text)
              for sample in family.samples}
    return (values["zerase_generation_batch_size_sum"], values["zerase_generation_batch_size_count"],
            values["zerase_generation_queue_seconds_sum"])


def deploy(settings: Settings, ids: list[str]) -> int:
    with session_factory(settings.database_url)() as db:
        return deployments.create(db, ids, actor=Actor("benchmark")).version


def activate(settings: Settings, version: int) -> None:
    with session_factory(settings.database_url)() as db:
        deployments.activate(db, version, Actor("benchmark"))


def post(client: httpx.Client, seed: int) -> httpx.Response:
    return client.post("/generate", json={"prompt": PROMPTS[seed % len(PROMPTS)], "seed": seed})


def warm(base: str, key: str, version: int) -> None:
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        assert post(client, 0).headers["x-safety-patch-version"] == str(version)


def single_p50(base: str, key: str, n: int) -> float:
    with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        lat = []
        for seed in range(n):
            t = time.perf_counter()
            post(client, seed).raise_for_status()
            lat.append(time.perf_counter() - t)
    return statistics.median(lat)


def saturate(base: str, keys: list[str], seconds: float) -> float:
    """Images per second from CLIENTS closed-loop clients."""
    done, end = [0] * len(keys), time.monotonic() + seconds

    def client_loop(i: int) -> None:
        with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {keys[i]}"}) as client:
            seed = 0
            while time.monotonic() < end:
                if post(client, seed).status_code == 200:
                    done[i] += 1
                seed += 1

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(len(keys))]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started)


def open_loop(base: str, keys: list[str], rate: float, seconds: float) -> tuple[list[float], int, int]:
    """Request i starts at i/rate on a pool thread, whatever the others are doing; (latencies of 200s,
    429 count, requests sent)."""
    latencies: list[float] = []
    refused = 0
    lock = threading.Lock()
    clients = [httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {k}"}) for k in keys]
    count = int(rate * seconds)

    def one(i: int) -> None:
        nonlocal refused
        t = time.perf_counter()
        r = post(clients[i % len(clients)], i)
        with lock:
            if r.status_code == 200:
                latencies.append(time.perf_counter() - t)
            elif r.status_code == 429:
                refused += 1

    with ThreadPoolExecutor(max_workers=32) as pool:
        start = time.perf_counter()
        for i in range(count):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            pool.submit(one, i)
    for c in clients:
        c.close()
    return latencies, refused, count


if __name__ == "__main__":
    main()
