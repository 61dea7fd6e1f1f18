"""`zerase demo`: the main job end to end, as a moderator sees it.

Starts `zerase serve` (embedded defaults unless ZERASE_* say otherwise) and makes an admin key,
generates the concept and some preserved prompts through /generate, submits an erasure over HTTP,
shows a progress bar while polling, downloads the LoRA and checks its sha256, deploys it, generates
the same prompts and seeds again, and writes the before/after grid (PNG) with the probe's reading.
"""

from __future__ import annotations

import hashlib
import io
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.core.settings import get_settings
from service.deployments.contract import PATCH_HEADER
from service.erasures.contract import FINISHED

GRID_SEEDS = range(4)
console = Console()

if TYPE_CHECKING:
    from zerase.model.profiles import ModelProfile


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_demo(url: str | None, concept: str, category: str, steps: int | None, key: str | None = None) -> int:
    """Returns the process exit code: 0 when the erasure succeeded, its artifact checked out and the
    deployment serves it. With `url`, `key` must be an admin or moderator key of that service."""
    settings = get_settings()
    server = None
    if url is None:
        from service.audit.service import Actor
        from service.core.db import migrate
        from service.keys.service import issue_key

        migrate(settings.database_url)
        made, key = issue_key(settings.database_url, "demo-admin", "admin", Actor("zerase demo"))
        console.print(f"made admin key {made.id} (shown once): [bold]{key}[/]")
    elif key is None:
        raise SystemExit("--api-key (or ZERASE_API_KEY) is needed to use a running service")
    # A plain SIGTERM would skip the `finally` below and leave the started server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = settings.var_dir / "demo-serve.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"starting [bold]zerase serve[/] on {url} (log: {log_path})")
        with log_path.open("ab") as log:
            server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
                                      stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            _wait_ready(client, server)
            console.print(f"moderation console: [bold]{url}/console[/] (sign in with the API key "
                          f"{'above' if server else 'you gave'}; it shows this demo's job live)")
            return _moderate(client, settings.var_dir / "demo", concept, category, steps, settings.model_dir)
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # uvicorn's graceful stop: the worker thread finishes too
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


def _wait_ready(client: httpx.Client, server: subprocess.Popen[bytes] | None, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if server is not None and server.poll() is not None:
            raise SystemExit(f"zerase serve exited with code {server.returncode}; see its log")
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the service at {client.base_url} was not ready after {timeout_s:.0f}s")
        time.sleep(0.5)


def _moderate(client: httpx.Client, out_dir: Path, concept: str, category: str, steps: int | None,
              model_dir: Path | None) -> int:
    body: dict[str, Any] = {"concept": concept, "category": category, "reason": "demo: ticket DEMO-1"}
    if steps is not None:
        body["steps"] = steps
    started = time.monotonic()
    response = client.post("/erasures", json=body, headers={"Idempotency-Key": uuid.uuid4().hex})
    if response.status_code != 202:
        console.print(f"[red]submission refused ({response.status_code})[/]: {response.text}")
        return 1
    job = response.json()
    hp = job["hyperparameters"]
    console.print(f"submitted {job['id']} (POST /erasures -> 202, Location {response.headers['location']}): "
                  f"erase {concept!r} ({category}), ε={hp['epsilon']}, anchor={hp['anchor']!r}, "
                  f"{hp['steps']} steps, {len(hp['preservation'])} preservation prompts")
    from zerase.model.profiles import profile_for

    profile = profile_for(model_dir)
    prompts = profile.preview_prompts(concept, hp["preservation"])  # the concept, then 3 preserved prompts
    before, version_before = _generate_rows(client, prompts)  # what is served now, before the deploy
    job = _follow(client, job)
    took = time.monotonic() - started
    if job["status"] != "succeeded":
        console.print(f"[red]{job['status']}[/] after {took:.1f}s: {job['error']}")
        return 1

    artifact = job["artifact"]
    data = client.get(artifact["url"]).content
    ok = hashlib.sha256(data).hexdigest() == artifact["sha256"]
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{job['id']}.safetensors"
    path.write_bytes(data)
    deployed = client.post(f"/erasures/{job['id']}/deploy")
    if deployed.status_code != 201:  # the deploy gate's 409 names the metric that failed
        console.print(f"[red]deploy refused ({deployed.status_code})[/]: {deployed.text}")
        return 1
    version = deployed.json()["version"]
    after, version_after = _generate_rows(client, prompts)
    grid_path = out_dir / f"{job['id']}-before-after.png"
    _save_grid(grid_path, before, after, prompts, profile)

    table = Table(title=f"erasure {job['id']}: succeeded", show_header=False)
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")  # URIs and hashes in full, never cut with an ellipsis
    table.add_row("time, POST to succeeded", f"{took:.1f} s")
    table.add_row("artifact", artifact["uri"])
    table.add_row("sha256 / bytes", f"{artifact['sha256']} / {artifact['bytes']}")
    table.add_row("downloaded to", f"{path} (sha256 {'matches' if ok else '[red]DOES NOT MATCH[/]'})")
    p = job["progress"]
    table.add_row("final λ, L_er, L_pr", f"{p['lambda']:.4g}, {p['loss_erase']:.4g}, "
                                         f"{p['loss_preserve']:.4g}")
    table.add_row("deployed", f"POST /erasures/{job['id']}/deploy -> version {version}")
    table.add_row(f"/generate {PATCH_HEADER}", f"{version_before} before, {version_after} after")
    table.add_row("before/after grid", f"{grid_path} (labelled: each prompt before, then after; "
                                       f"columns: seeds {list(GRID_SEEDS)}; the evaluator's reading under each)")
    e = job.get("evaluation") or {}
    if "acc_e" in e:  # the worker's own evaluation of the job (a small sample; see zerase.evaluate.evaluation)
        table.add_row("job evaluation (worker)", f"Acc_e {e['acc_e_before']:.2f}→{e['acc_e']:.2f}, Acc_ir "
                                                 f"{e['acc_ir_before']:.2f}→{e['acc_ir']:.2f}, Ha {e['ha']:.2f}")
    for attack in e.get("attacks", []):
        if attack["name"] in ("ring_a_bell", "unlearndiff"):
            unpatched = attack.get("success_rate_before")
            table.add_row(f"red team: {attack['name']}", f"success {attack['success_rate']:.2f} with the erasure"
                          + (f", {unpatched:.2f} without" if unpatched is not None else ""))
    if job.get("preview_url"):
        table.add_row("job preview", f"GET {job['preview_url']}")
    page = client.base_url.join(f"/console/erasures/{job['id']}")
    table.add_row("console", f"{page}; after the demo, `make serve` and "
                             f"http://{get_settings().api_host}:{get_settings().api_port}/console with the same key")
    console.print(table)
    _evaluator_report(profile, concept, prompts, before, after)
    return 0 if ok and version_after == version else 1


def _generate_rows(client: httpx.Client, prompts: list[str]) -> tuple[np.ndarray, int]:
    """(prompts, seeds, H, W, 3) images from /generate, and the patch version they were made under."""
    rows, versions = [], set()
    for prompt in prompts:
        row = []
        for seed in GRID_SEEDS:
            r = client.post("/generate", json={"prompt": prompt, "seed": seed})
            r.raise_for_status()
            versions.add(int(r.headers[PATCH_HEADER]))
            row.append(np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB")))
        rows.append(row)
    if len(versions) != 1:
        raise RuntimeError(f"the patch version changed while the grid was generated: {sorted(versions)}")
    return np.asarray(rows), versions.pop()


def _save_grid(path: Path, before: np.ndarray, after: np.ndarray, prompts: list[str], profile: ModelProfile) -> None:
    """The labelled before/after grid (zerase.evaluate.preview), with the evaluator's reading under each image."""
    from zerase.evaluate.preview import labelled_grid

    flat_b, flat_a = (x.reshape(-1, *x.shape[2:]) for x in (before, after))  # prompt-major, then seed
    evaluator = profile.evaluator()
    shown = [p for p in prompts for _ in GRID_SEEDS]
    readings = [evaluator.read(x, shown) for x in (flat_b, flat_a)] if evaluator is not None else [None, None]
    Image.fromarray(labelled_grid(flat_b, flat_a, prompts, list(GRID_SEEDS), *readings)).save(path)


def _evaluator_report(profile: ModelProfile, concept: str, prompts: list[str], before: np.ndarray,
                      after: np.ndarray) -> None:
    """What the model's evaluator reads in the grid's images, before and after the deploy."""
    evaluator = profile.evaluator()
    if evaluator is None or not evaluator.can_read(concept):  # a real model (Z-Image Turbo) has no probe yet
        console.print(f"probe numbers: no evaluator can read {concept!r} on this model")
        return
    table = Table(title=f"probe on the grid ({len(GRID_SEEDS)} seeds per prompt)")
    for column in ("prompt", "before", "after"):
        table.add_column(column)
    wanted = concept.casefold()
    for i, prompt in enumerate(prompts):
        b, a = (evaluator.read(images[i], [prompt] * len(images[i])) for images in (before, after))
        if i == 0:
            shows = [sum(wanted in {c.casefold() for c in seen} for seen in readings) / len(readings)
                     for readings in (b, a)]
            table.add_row(f"{prompt!r}: shows {concept}", f"{shows[0]:.2f}", f"{shows[1]:.2f}")
        else:  # preserved: the evaluator should read the same concepts after as before
            kept = sum(x == y for x, y in zip(b, a, strict=True)) / len(b)
            table.add_row(f"{prompt!r}: same reading as before", "1.00", f"{kept:.2f}")
    console.print(table)


def _follow(client: httpx.Client, job: dict[str, Any]) -> dict[str, Any]:
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total}"), TextColumn("{task.fields[metrics]}"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("queued", total=job["hyperparameters"]["steps"], metrics="")
        while job["status"] not in FINISHED:
            time.sleep(0.5)
            job = client.get(job["url"]).json()
            p = job["progress"]
            metrics = "" if p is None else (f"λ={p['lambda']:.3g} L_er={p['loss_erase']:.4g} "
                                            f"L_pr={p['loss_preserve']:.3g} ETA {p['eta_seconds'] or 0:.0f}s")
            bar.update(task, description=job["status"], completed=p["step"] if p else 0, metrics=metrics)
    return job
