"""`zerase serve` as a user starts it: nothing configured but a data directory. It migrates, serves,
runs jobs in-process, and on Ctrl-C puts a running job back in the queue; the next start resumes it."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from jobclient import REPO, all_events, start_serve, submit, wait_for


@contextmanager
def serve(var_dir: Path, model_dir: Path | None, log: Path) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERASE_")}
    env |= {"ZERASE_VAR_DIR": str(var_dir), "ZERASE_PROGRESS_INTERVAL_S": "0.5", "ZERASE_CHECKPOINT_EVERY": "2",
            "ZERASE_EVALUATE_JOBS": "false",
            **({"ZERASE_MODEL_DIR": str(model_dir)} if model_dir else {})}
    # The first key, as an operator makes it: `zerase keys create` (the secret alone on stdout).
    made = subprocess.run([sys.executable, "-m", "cli.main", "keys", "create", "--role", "moderator", "--name",
                           "on-call"], cwd=REPO, env=env, capture_output=True, text=True, check=True)
    secret = made.stdout.strip()
    assert secret.startswith("zk_") and "created key_" in made.stderr
    proc, client = start_serve(env, log, {"Authorization": f"Bearer {secret}"})
    try:
        yield client, proc
    finally:
        client.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_runs_jobs_and_a_restart_resumes_the_interrupted_one(tmp_path: Path, model_dir: Path | None) -> None:
    var, log = tmp_path / "var", tmp_path / "serve.log"
    with serve(var, model_dir, log) as (client, proc):
        quick = submit(client, concept="circle", category="entity", steps=2)
        assert wait_for(client, quick["id"])["status"] == "succeeded"
        long = submit(client, concept="square", category="entity", steps=2000)
        wait_for(client, long["id"], ("running",), min_step=3)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, log.read_text()[-3000:]

    assert (var / "zerase.db").exists() and (var / "artifacts").is_dir()  # the embedded defaults
    with serve(var, model_dir, log) as (client, _):
        deadline = time.monotonic() + 120
        while not (steps := resumed_steps(client, long["id"])):
            assert time.monotonic() < deadline, "the interrupted job did not run again"
            time.sleep(0.3)
        assert steps[0] > 2, "the second start trained from scratch instead of resuming"
        assert client.get(f"/erasures/{long['id']}").json()["attempts"] == 2
        assert client.post(f"/erasures/{long['id']}/cancel").status_code == 202
        assert wait_for(client, long["id"], timeout_s=60)["status"] == "cancelled"
        assert client.get(f"/erasures/{quick['id']}").json()["status"] == "succeeded"  # state survived
        assert idle_connection_still_answers(str(client.base_url))


def idle_connection_still_answers(base_url: str, idle_s: float = 6.0) -> bool:
    """A client that pauses between requests reuses its pooled connection: the server must not have closed
    it under the client after uvicorn's 5 s default (the next POST would fail with "server disconnected")."""
    url = httpx.URL(base_url)
    connection = http.client.HTTPConnection(url.host, url.port, timeout=10)
    try:
        connection.request("GET", "/readyz")
        connection.getresponse().read()
        time.sleep(idle_s)
        connection.request("GET", "/readyz")  # on the same socket: http.client reopens only a closed one it knows of
        return connection.getresponse().status == 200
    except (http.client.RemoteDisconnected, ConnectionError):
        return False
    finally:
        connection.close()


def resumed_steps(client: httpx.Client, job_id: str) -> list[int]:
    """Steps reported after the job went back to the queue at shutdown."""
    events = all_events(client, job_id)
    requeued = next(i for i, e in enumerate(events) if e["message"].startswith("worker shutting down"))
    return [e["data"]["step"] for e in events[requeued:] if e["kind"] == "metrics"]
