"""`run_job(job_id)`: what a worker does with "look at job N", Celery task and embedded thread alike.

It re-reads the row, claims the job, trains through the core with throttled progress writes, a
heartbeat and checkpoints, evaluates the result, trains again with one setting changed while the deploy
gate's judge refuses the round (service.erasures.retune), publishes the artifact to the store, and records how it
ended (what follows a success, such as auto-deploy, subscribes to the job-finished event).
"""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from service.core.db import session_factory
from service.core.logs import adopt_model_libraries, for_job
from service.core.metrics import TRAINING_STEPS
from service.core.settings import Settings
from service.core.store import store_for
from service.core.tables import utcnow
from service.erasures import lifecycle, publish, retune
from service.erasures.contract import EventKind, JobStatus
from service.erasures.models import ErasureJob

log = logging.getLogger(__name__)

_pipelines: dict[tuple[str, str, str], Any] = {}
_pipeline_lock = threading.Lock()
# Training, a job's report and a deployment's evaluation patch the shared pipeline's transformer: one at a time
# per process.
model_in_use = threading.Lock()


def base_pipeline(settings: Settings) -> Any:
    """The base model, loaded once per process and shared by every job that process runs."""
    key = (str(settings.model_dir or ""), settings.device, settings.dtype)
    with _pipeline_lock:
        if key not in _pipelines:
            import torch

            from zerase.model.pipeline import load_pipeline

            adopt_model_libraries()  # now imported: their logs go through our handler too
            dtype = getattr(torch, settings.dtype)
            _pipelines[key] = load_pipeline(settings.model_dir, settings.device, dtype)
        return _pipelines[key]


def preload_model_stack() -> None:
    """Import the core's model code now, in a process that will run it: diffusers' lazy modules are not
    safe to import from two threads at once (a request and the embedded worker), and the first job or
    request would otherwise pay seconds for the imports."""
    import zerase.evaluate.evaluation
    import zerase.model.pipeline  # noqa: F401

    adopt_model_libraries()


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@for_job  # every line logged while the job runs (the core's and libraries' too) carries job_id
def run_job(job_id: str, settings: Settings, stop: Callable[[], bool] = lambda: False) -> str | None:
    """Run one job to its end; returns its new status, or None if it was not queued (nothing done).

    `stop` is the worker shutting down: the job goes back to the queue and resumes from its checkpoint.
    """
    sessions = session_factory(settings.database_url)
    with sessions() as db:
        job = lifecycle.claim(db, job_id, worker_name())
    if job is None:
        log.info("job %s is not queued; nothing to do", job_id)
        return None
    claim = lifecycle.Claim.of(job)
    try:
        with _Heartbeat(sessions, claim, settings.heartbeat_interval_s):
            return _train(job, claim, settings, sessions, stop)
    except Exception as exc:
        log.exception("job %s failed", job_id)
        error = f"{type(exc).__name__}: {exc}"
        with sessions() as db:
            # The traceback is in the log (above); the job's events, which moderators read, get the error alone.
            lifecycle.finish(db, job_id, JobStatus.FAILED, f"failed: {error}", error=error,
                             data={"error_type": type(exc).__name__}, claim=claim)
        return JobStatus.FAILED


def _deadline(job: ErasureJob, settings: Settings) -> float:
    """A monotonic deadline: the timeout counts from the first attempt's start, across every attempt."""
    first_start = job.started_at or utcnow()
    left = settings.job_timeout_s - (utcnow() - first_start).total_seconds()
    if left <= 0:
        raise TimeoutError(f"out of time after {job.attempts - 1} attempts: ZERASE_JOB_TIMEOUT_S "
                           f"({settings.job_timeout_s}s) counts from the first attempt's start")
    return time.monotonic() + left


def _train(job: ErasureJob, claim: lifecycle.Claim, settings: Settings, sessions: sessionmaker[Session],
           stop: Callable[[], bool]) -> str:
    from zerase.patch.artifact import load_artifact
    from zerase.train.erasure import EraseConfig, erase, setup_stage

    deadline = _deadline(job, settings)
    progress = _Progress(sessions, claim, settings)
    with setup_stage(progress.on_stage, "load_model"):  # once per process; later jobs find it loaded
        pipe = base_pipeline(settings)
    checkpoint_dir = settings.checkpoint_dir / job.id

    def should_stop() -> bool:
        standing = progress.standing()
        return standing.cancel_requested or not standing.owner or stop() or time.monotonic() > deadline

    store = store_for(settings)
    with sessions() as db:
        done = retune.rounds_done(db, job.id)
    config = dict(job.config)
    while True:  # a round: train, evaluate; again with one change while the judge refuses it
        with model_in_use:
            result = erase(pipe, EraseConfig.from_dict(config), on_step=progress.on_step, should_stop=should_stop,
                           checkpoint_dir=checkpoint_dir, checkpoint_every=settings.checkpoint_every,
                           on_stage=progress.on_stage)
        progress.flush()
        summary = {"steps_done": result.steps_done, "final_lambda": result.final_lambda}
        if result.cancelled:
            return _interrupted(job, claim, settings, sessions, progress, summary, checkpoint_dir, deadline)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{job.id}.safetensors"
            result.save(path)
            artifact = load_artifact(path, pipe)  # never publish a file the loader would refuse
            evaluation, preview, served = None, None, None
            if settings.evaluate_jobs and not progress.standing().cancel_requested:
                with model_in_use:  # the strength search and the report patch the shared pipeline too
                    artifact = publish.strengthen(pipe, artifact, path, sessions, job.id, settings)
                    evaluation, preview, served = publish.report(pipe, artifact, sessions, job.id, settings)
            missed = retune.judge(settings, job.id, evaluation)
            record = retune.next_round(settings, config, missed, done)
            if record is None:
                if done and evaluation is not None:
                    evaluation["retune"] = retune.summary(done, config, missed)
                # Raises StoreUnavailable after its retries: the job fails, the checkpoint stays, a retry only
                # publishes (and evaluates again).
                stored = publish.upload(store, path, "artifact", sessions, job.id, settings)
                stored_preview = publish.store_preview(preview, store, sessions, job.id, settings)
                served_patch = publish.store_served(served, store, sessions, job.id, settings)
                if served_patch is not None and evaluation is not None:
                    evaluation["served_patch"] = served_patch
                break
        with sessions() as db:
            if not retune.start_next(db, claim, config, record):
                return _lost(sessions, claim)
        done.append(record)
        config |= record["change"]
        shutil.rmtree(checkpoint_dir, ignore_errors=True)  # the next round starts from the base model
        progress.restart()
    with sessions() as db:
        succeeded = lifecycle.finish(db, job.id, JobStatus.SUCCEEDED, f"succeeded: {stored.uri}", artifact=stored,
                                     data={**summary, "sha256": stored.sha256, "bytes": stored.bytes},
                                     evaluation=evaluation, preview=stored_preview, claim=claim)
    if succeeded:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        return JobStatus.SUCCEEDED
    standing = progress.standing()
    if standing.owner and standing.cancel_requested:  # cancelled while it was being published
        return _cancelled(sessions, claim, "cancelled before it was published; nothing was deployed", summary,
                          checkpoint_dir)
    return _lost(sessions, claim)


def _interrupted(job: ErasureJob, claim: lifecycle.Claim, settings: Settings, sessions: sessionmaker[Session],
                 progress: _Progress, summary: dict[str, Any], checkpoint_dir: Path, deadline: float) -> str:
    """Training stopped early: the sweeper took the job, a cancel, the deadline, or the worker shutting down."""
    standing = progress.standing()
    if not standing.owner:
        return _lost(sessions, claim)
    if standing.cancel_requested:
        return _cancelled(sessions, claim, f"cancelled after {summary['steps_done']} steps", summary, checkpoint_dir)
    if time.monotonic() > deadline:
        raise TimeoutError(f"still training after {settings.job_timeout_s}s (ZERASE_JOB_TIMEOUT_S, counted "
                           "across attempts)")
    with sessions() as db:  # the worker is stopping: the checkpoint stays for the next attempt
        lifecycle.requeue(db, job.id, "worker shutting down; queued again, resumes from its checkpoint",
                          data=summary, claim=claim)
    return JobStatus.QUEUED


def _cancelled(sessions: sessionmaker[Session], claim: lifecycle.Claim, message: str, summary: dict[str, Any],
               checkpoint_dir: Path) -> str:
    with sessions() as db:
        lifecycle.finish(db, claim.job_id, JobStatus.CANCELLED, message, data=summary, claim=claim)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return JobStatus.CANCELLED


def _lost(sessions: sessionmaker[Session], claim: lifecycle.Claim) -> str:
    """The sweeper took the job back meanwhile: whoever holds it now owns it (and the checkpoint)."""
    with sessions() as db:
        status = lifecycle.get_job(db, claim.job_id).status
    log.warning("attempt %d lost the job (now %s); this worker leaves it alone", claim.attempt, status)
    return status


CURVE_POINTS = 100
SETUP_STAGES = {"load_model": "loading the model", "encode_captions": "encoding the captions",
                "build_trajectories": "building the trajectory banks",
                "null_space": "finding the directions the preserved prompts use"}


class _Progress:
    """Progress to the job row at most every `progress_interval_s`, a metrics event at most every
    `metrics_event_interval_s`; the first and last steps always get both."""

    def __init__(self, sessions: sessionmaker[Session], claim: lifecycle.Claim, settings: Settings) -> None:
        self.sessions, self.claim, self.settings = sessions, claim, settings
        self.pending: dict[str, Any] | None = None
        self.last_row = self.last_event = -float("inf")
        self.start: tuple[float, int] | None = None  # (time, step) of this attempt's first report
        # [step, loss_erase, loss_preserve, λ] at most CURVE_POINTS times per job, for the console's plot. A
        # resumed attempt starts its curve at the checkpoint: the steps before it were another attempt's.
        self.curve: list[list[float]] = []

    def on_step(self, metrics: Any) -> None:
        TRAINING_STEPS.inc()
        now = time.monotonic()
        m = asdict(metrics)
        if self.start is None:
            self.start = (now, m["step"])
        t0, step0 = self.start
        # This attempt's own pace: a resumed run's elapsed_s may not cover the steps before the checkpoint.
        done = m["step"] - step0
        per_step = (now - t0) / done if done > 0 else m["elapsed_s"] / max(m["step"], 1)
        if m["step"] % max(1, m["total"] // CURVE_POINTS) == 0 or m["step"] >= m["total"]:
            self.curve.append([m["step"], *(float(f"{m[k]:.5g}") for k in ("loss_erase", "loss_preserve", "lam"))])
        self.pending = {
            "step": m["step"], "total": m["total"], "lambda": m["lam"], "loss_erase": m["loss_erase"],
            "loss_preserve": m["loss_preserve"], "eta_seconds": round(per_step * (m["total"] - m["step"]), 1),
            "curve": list(self.curve),
        }
        edge = self.last_row < 0 or m["step"] >= m["total"]
        if edge or now - self.last_row >= self.settings.progress_interval_s:
            self.flush(event=edge or now - self.last_event >= self.settings.metrics_event_interval_s)

    def restart(self) -> None:
        """Another round trains from step 1: its pace and curve are its own."""
        self.start, self.curve = None, []
        self.last_row = self.last_event = -float("inf")

    def on_stage(self, stage: str, seconds: float | None) -> None:
        """A set-up stage's start and end as job events: on the real model minutes pass before step 1."""
        what = SETUP_STAGES.get(stage, stage)
        message = f"set-up: {what}" if seconds is None else f"set-up: {what} took {seconds:.1f}s"
        with self.sessions() as db:
            lifecycle.add_event(db, self.claim.job_id, EventKind.INFO, message,
                                {"stage": stage, **({} if seconds is None else {"seconds": seconds})})
            db.commit()

    def flush(self, event: bool = True) -> None:
        if self.pending is None:
            return
        now = time.monotonic()
        with self.sessions() as db:
            lifecycle.record_progress(db, self.claim, self.pending, event=event)
        self.last_row = now
        if event:
            self.last_event = now
        self.pending = None

    def standing(self) -> lifecycle.Standing:
        with self.sessions() as db:
            return lifecycle.standing(db, self.claim)


class _Heartbeat:
    """A thread that stamps heartbeat_at, so the sweeper can tell a slow step from a dead worker."""

    def __init__(self, sessions: sessionmaker[Session], claim: lifecycle.Claim, interval_s: float) -> None:
        self.sessions, self.claim, self.interval_s = sessions, claim, interval_s
        self.done = threading.Event()
        # In the job's context, so its log lines carry the job id too.
        self.thread = threading.Thread(target=contextvars.copy_context().run, args=(self._beat,),
                                       name=f"heartbeat-{claim.job_id}", daemon=True)

    def _beat(self) -> None:
        while not self.done.wait(self.interval_s):
            try:
                with self.sessions() as db:
                    lifecycle.heartbeat(db, self.claim)
            except Exception:  # a missed beat is not fatal; the sweeper allows several
                log.warning("heartbeat for %s failed", self.claim.job_id, exc_info=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join()
