"""Fail fast, name the setting: a model directory that is not there stops `zerase serve` at start-up (and
turns /readyz unready) naming ZERASE_MODEL_DIR and the path; a misspelt ZERASE_* variable is named with the
setting it was meant to be; the key commands say which database they used; the worker shows the broker URL as
configured; a job's events show its set-up stages before step 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobclient import REPO, all_events_direct, live_api, submit_direct
from typer.testing import CliRunner

from cli.demo import free_port
from cli.startup import evaluator_warning, unknown_variables
from service.core.db import migrate
from service.core.settings import Settings, get_settings
from service.erasures.runner import run_job
from worker.celery_app import ConfiguredUrlConnection


def zerase_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZERASE_")}
    return env | {"ZERASE_VAR_DIR": str(tmp_path / "var"), **extra}


def test_serve_refuses_a_missing_model_dir_in_one_line_and_warns_of_a_misspelt_variable(tmp_path: Path) -> None:
    missing = tmp_path / "models" / "Z-Image-Turbo"
    env = zerase_env(tmp_path, ZERASE_MODEL_DIR=str(missing), ZERASE_MODLE_DIR="/models/other")
    done = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--port", str(free_port())], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "ZERASE_MODLE_DIR is not a setting and is ignored; did you mean ZERASE_MODEL_DIR?" in done.stderr
    assert done.stderr.strip().splitlines()[-1] == f"zerase: error: ZERASE_MODEL_DIR={missing}: no such directory"


def test_serve_refuses_a_device_torch_cannot_use(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--port", str(free_port())], cwd=REPO,
                          env=zerase_env(tmp_path, ZERASE_DEVICE="cdua"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1].startswith("zerase: error: ZERASE_DEVICE='cdua': ")


def test_readyz_is_unready_when_the_model_dir_goes_missing(tmp_path: Path) -> None:
    from zerase.model.profiles import BUNDLED_MODEL_DIR

    model = tmp_path / "model"
    shutil.copytree(BUNDLED_MODEL_DIR, model)
    # A control plane (no model in the process: no torch, no device check), with the model's files to read.
    settings = Settings(var_dir=tmp_path / "var", model_dir=model, api_routes="control", embedded_worker=False)
    migrate(settings.database_url)
    with live_api(settings) as client:
        assert client.get("/readyz").json()["checks"]["model"] == "ok"
        (model / "model_index.json").unlink()
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["model"] == "unavailable"
        assert "model" in ready.json()["detail"]


def test_unknown_variables_name_the_closest_setting(tmp_path: Path) -> None:
    environ = {"ZERASE_MODLE_DIR": "x", "ZERASE_DATABSE_URL": "x", "zerase_log_levle": "x", "ZERASE_MODEL_DIR": "x",
               "ZERASE_API_KEY": "k", "ZERASE_DEBUG": "1", "ZERASE_TEST_REDIS_URL": "x", "ZERASE_ZZZ": "x",
               "PATH": "/bin"}
    (tmp_path / ".env").write_text("ZERASE_BROKR_URL=redis://x\n")
    assert unknown_variables(environ, tmp_path / ".env") == [
        "ZERASE_BROKR_URL is not a setting and is ignored; did you mean ZERASE_BROKER_URL?",
        "ZERASE_DATABSE_URL is not a setting and is ignored; did you mean ZERASE_DATABASE_URL?",
        "ZERASE_LOG_LEVLE is not a setting and is ignored; did you mean ZERASE_LOG_LEVEL?",
        "ZERASE_MODLE_DIR is not a setting and is ignored; did you mean ZERASE_MODEL_DIR?",
        "ZERASE_ZZZ is not a setting and is ignored",
    ]


def test_a_real_model_without_an_evaluator_is_warned_about(tmp_path: Path) -> None:
    """A Turbo directory and no ZERASE_CLIP_DIR: the gate would refuse every deploy; the bundled world reads its own."""
    turbo = tmp_path / "Z-Image-Turbo"
    (turbo / "scheduler").mkdir(parents=True)
    (turbo / "model_index.json").write_text("{}")
    (turbo / "scheduler" / "scheduler_config.json").write_text('{"shift": 3.0}')
    warning = evaluator_warning(Settings(var_dir=tmp_path, model_dir=turbo))
    assert warning and "ZERASE_CLIP_DIR" in warning and str(turbo) in warning and "refuse every deploy" in warning
    assert evaluator_warning(Settings(var_dir=tmp_path, model_dir=turbo, clip_dir=tmp_path)) is None
    assert evaluator_warning(Settings(var_dir=tmp_path)) is None  # the bundled world: its probe


def test_key_commands_say_which_database_they_use(tmp_path: Path) -> None:
    from cli.main import app

    db = tmp_path / "keys.db"
    get_settings.cache_clear()
    try:
        made = CliRunner().invoke(app, ["keys", "create", "--role", "admin", "--name", "ops"],
                                  env={"ZERASE_DATABASE_URL": f"sqlite:///{db}", "ZERASE_DATABSE_URL": "typo"})
        assert made.exit_code == 0, made.output
        assert made.stdout.strip().startswith("zk_")  # the secret alone on stdout
        assert "ZERASE_DATABSE_URL is not a setting and is ignored; did you mean ZERASE_DATABASE_URL?" in made.stderr
        assert f"database sqlite:///{db}\n" in made.stderr
        get_settings.cache_clear()
        # A password in the URL is masked (the server is not there: only the first line matters here).
        listed = CliRunner().invoke(app, ["keys", "list"], env={
            "ZERASE_DATABASE_URL": f"postgresql+psycopg://ops:hunter2@127.0.0.1:{free_port()}/zerase"})
        assert listed.stderr.splitlines()[0].startswith("database postgresql+psycopg://ops:***@127.0.0.1:")
        assert "hunter2" not in listed.stderr.splitlines()[0]
    finally:
        get_settings.cache_clear()


def test_the_worker_shows_the_broker_url_as_configured(tmp_path: Path) -> None:
    assert ConfiguredUrlConnection("redis://:s3cret@redis:6379/0").as_uri() == "redis://:**@redis:6379/0"
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "worker"], cwd=REPO, text=True,
                            env=zerase_env(tmp_path, ZERASE_BROKER_URL=url), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        assert proc.stderr is not None
        for line in proc.stderr:
            if "Cannot connect to" in line:
                break
            assert time.monotonic() < deadline and proc.poll() is None, "the worker never tried the broker"
        assert f"Cannot connect to {url}:" in line, line
    finally:
        proc.kill()
        proc.wait()


def test_a_jobs_events_show_its_set_up_stages_before_step_1(tmp_path: Path, model_dir: Path | None) -> None:
    settings = Settings(var_dir=tmp_path / "var", model_dir=model_dir, embedded_worker=False, evaluate_jobs=False)
    migrate(settings.database_url)
    job_id = submit_direct(settings, "red", "abstraction", steps=2, trajectories=2)
    assert run_job(job_id, settings) == "succeeded"
    events = all_events_direct(settings, job_id)
    first_step = next(i for i, e in enumerate(events) if e.kind == "metrics")
    stages = [(e.data["stage"], "seconds" in e.data) for e in events[:first_step] if (e.data or {}).get("stage")]
    assert stages == [("load_model", False), ("load_model", True), ("encode_captions", False),
                      ("encode_captions", True), ("build_trajectories", False), ("build_trajectories", True),
                      ("null_space", False), ("null_space", True)]
    done = [e for e in events[:first_step] if (e.data or {}).get("seconds") is not None]
    assert all(e.data["seconds"] >= 0 and e.message.startswith("set-up: ") for e in done)
