"""`POST /generate` end to end, as a client sees it: latency with 0, 1 and 20 deployed erasures, and
the time from activating a deployment to the first response generated under it.

    python benchmarks/generate_endpoint.py [--requests 60]

`zerase serve` (subprocess, no worker) on PostgreSQL (a fresh database, dropped after) and a file
artifact store; the tiny model at its default size (32x32, 8 steps). Artifacts are random
text-gated LoRAs of the default shape recorded as succeeded erasures: latency does not depend on
what they erase. Requests are sequential from one client, seeds varying. Prints numbers only.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from _stack import admin_key, fresh_database, serve, stop
from generation import random_artifacts

from service.core.db import session_factory
from service.core.settings import Settings
from service.core.store import store_for
from service.core.tables import utcnow
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob, new_job_id
from zerase.model.pipeline import load_pipeline


def record(settings: Settings, paths: list[Path]) -> list[str]:
    """Store each artifact and record a succeeded job for it, as a worker would."""
    store, ids = store_for(settings), []
    with session_factory(settings.database_url)() as db:
        for i, path in enumerate(paths):
            stored = store.put(path)
            job = ErasureJob(id=new_job_id(), status=JobStatus.SUCCEEDED, concept=f"c{i}", category="custom",
                             config={}, requested_by="benchmark", finished_at=utcnow(), artifact_uri=stored.uri,
                             artifact_sha256=stored.sha256, artifact_bytes=stored.bytes)
            db.add(job)
            ids.append(job.id)
        db.commit()
    return ids


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=120, help="per deployment size")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--switches", type=int, default=10, help="activations timed")
    args = parser.parse_args()
    with fresh_database("zerase_gen") as url, tempfile.TemporaryDirectory() as var:
        settings = Settings(database_url=url, var_dir=Path(var), embedded_worker=False, auto_migrate=False)
        random_artifacts(load_pipeline(), 20, Path(var))  # writes a0..a19.safetensors
        paths = [Path(var) / f"a{i}.safetensors" for i in range(20)]
        ids = record(settings, paths)
        # The 1/N stack of 20 patches, served at once (benchmarks/takedowns.py times the fused patch).
        env = {"ZERASE_DATABASE_URL": url, "ZERASE_VAR_DIR": var, "ZERASE_EMBEDDED_WORKER": "false",
               "ZERASE_AUTO_MIGRATE": "false", "ZERASE_FUSION": "average"}
        server, base = serve(env, Path(var) / "serve.log")
        try:
            with httpx.Client(base_url=base, timeout=120, headers=admin_key(url)) as client:
                versions = {0: 0}
                for n in (1, 20):
                    # Random artifacts have no evaluation: an admin forces them past the deploy gate.
                    versions[n] = client.post("/deployments", json={"erasure_ids": ids[:n], "force": True}
                                              ).json()["version"]

                def generate(seed: int) -> httpx.Response:
                    r = client.post("/generate", json={"prompt": "a red circle", "seed": seed})
                    r.raise_for_status()
                    return r

                # Interleaved rounds (0, 1, 20, 0, 1, 20, ...), so background load hits every size alike.
                print(f"POST /generate, tiny model at its default size, {args.requests} sequential requests "
                      f"per size in {args.rounds} interleaved rounds")
                lat: dict[int, list[float]] = {n: [] for n in versions}
                for r in range(args.rounds):
                    for n, version in versions.items():
                        client.post(f"/deployments/{version}/activate").raise_for_status()
                        # Warm-up: the first request applies the patch (and, once, loads the model).
                        assert generate(r).headers["x-safety-patch-version"] == str(version)
                        for seed in range(args.requests // args.rounds):
                            t = time.perf_counter()
                            generate(seed)
                            lat[n].append(time.perf_counter() - t)
                base = statistics.median(lat[0])
                for n, values in lat.items():
                    print(f"  {n:>2} erasures deployed (version {versions[n]}): p50 "
                          f"{statistics.median(values) * 1000:6.1f} ms  p99 {percentile(values, 0.99) * 1000:6.1f} ms"
                          f"  ({statistics.median(values) / base:.3f}x of 0)")

                # Activate -> first response under the new version (the generation process checks the
                # active version before every request, so this is one request plus the patch swap).
                switch = []
                for i in range(args.switches):
                    target = versions[20] if i % 2 == 0 else versions[1]
                    t = time.perf_counter()
                    client.post(f"/deployments/{target}/activate").raise_for_status()
                    while generate(i).headers["x-safety-patch-version"] != str(target):
                        pass
                    switch.append(time.perf_counter() - t)
                print(f"activate -> first image under the new version ({args.switches} switches between 1 and 20 "
                      f"erasures): p50 {statistics.median(switch) * 1000:.0f} ms, max {max(switch) * 1000:.0f} ms")
        finally:
            stop(server)


if __name__ == "__main__":
    main()
