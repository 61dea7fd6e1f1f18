"""`zerase demo`: the main job end to end, as a moderator sees it.

Starts `zerase serve` (embedded defaults unless ZERASE_* say otherwise), submits an erasure over
HTTP, shows a progress bar while polling, downloads the LoRA, checks its sha256 and reports.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from service.settings import get_settings

FINISHED = ("succeeded", "failed", "cancelled")
console = Console()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def run_demo(url: str | None, concept: str, category: str, steps: int | None) -> int:
    """Returns the process exit code: 0 when the erasure succeeded and its artifact checked out."""
    settings = get_settings()
    server = None
    # A plain SIGTERM would skip the `finally` below and leave the started server running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = settings.var_dir / "demo-serve.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        console.print(f"starting [bold]zerase serve[/] on {url} (log: {log_path})")
        with log_path.open("ab") as log:
            server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
                                      stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            _wait_ready(client, server)
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
    response = client.post("/erasures", json=body, headers={
        "X-Requested-By": "demo-moderator", "Idempotency-Key": uuid.uuid4().hex})
    if response.status_code != 202:
        console.print(f"[red]submission refused ({response.status_code})[/]: {response.text}")
        return 1
    job = response.json()
    hp = job["hyperparameters"]
    console.print(f"submitted {job['id']} (POST /erasures -> 202, Location {response.headers['location']}): "
                  f"erase {concept!r} ({category}), ε={hp['epsilon']}, anchor={hp['anchor']!r}, "
                  f"{hp['steps']} steps, {len(hp['preservation'])} preservation prompts")
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
    console.print(table)
    _probe_report(model_dir, path)
    return 0 if ok else 1


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


def _probe_report(model_dir: Path | None, artifact: Path) -> None:
    """What the concept probe reads in generated images, without and with the LoRA (same seeds)."""
    from zerase.evaluation import evaluate_artifact
    from zerase.pipeline import BUNDLED_MODEL_DIR, load_pipeline, sampling_defaults
    from zerase.world.probe import ConceptProbe

    probe_dir = (model_dir or BUNDLED_MODEL_DIR) / "probe"
    if not probe_dir.is_dir():  # a real model (Z-Image Turbo) has no concept probe of its own
        console.print(f"probe numbers: this model has no concept probe ({probe_dir} missing)")
        return
    console.print("generating with and without the erasure, and reading the images with the probe ...")
    started = time.monotonic()
    m = evaluate_artifact(load_pipeline(model_dir), artifact, probe=ConceptProbe.load(probe_dir),
                          settings=sampling_defaults(model_dir))
    table = Table(title=f"probe hit rates over {m['seeds']} seeds ({time.monotonic() - started:.0f} s)")
    for column in ("", "before", "after"):
        table.add_column(column)
    table.add_row(f"erased: {m['concept']} ({m['axis']}), Acc_e", f"{m['acc_e_before']:.3f}", f"{m['acc_e']:.3f}")
    table.add_row("every other concept, Acc_ir", f"{m['acc_ir_before']:.3f}", f"{m['acc_ir']:.3f}")
    table.add_row("Ha = Acc_ir - Acc_e", f"{m['acc_ir_before'] - m['acc_e_before']:.3f}", f"{m['ha']:.3f}")
    for attack, rates in m["attack_success_rate"].items():
        table.add_row(f"attack '{attack}': concept still shown", f"{rates['before']:.3f}", f"{rates['after']:.3f}")
    table.add_row("pixel drift on other concepts", "", f"{m['drift']:.4f}")
    console.print(table)
