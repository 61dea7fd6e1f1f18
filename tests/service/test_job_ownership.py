"""Who may end a job: a cancel request wins over a success that is still being published (and over its
auto-deploy); a worker that lost its job to the sweeper can no longer write to it; a job's timeout counts
across its attempts."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from jobclient import all_events_direct

from service.audit.service import Actor
from service.core.db import migrate, session_factory
from service.core.settings import Settings
from service.core.tables import utcnow
from service.deployments import service as deployments
from service.erasures import lifecycle
from service.erasures import service as jobs
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob, new_job_id
from service.erasures.runner import run_job


def embedded(tmp_path: Path, model_dir: Path | None, **overrides: object) -> Settings:
    settings = Settings(var_dir=tmp_path / "var", model_dir=model_dir, evaluate_jobs=False, store_retry_base_s=0.3,
                        **overrides)  # type: ignore[arg-type]
    migrate(settings.database_url)
    return settings


def test_a_cancel_while_publishing_wins_over_success_and_auto_deploy(tmp_path: Path, model_dir: Path | None) -> None:
    settings = embedded(tmp_path, model_dir)
    spec = jobs.JobSpec(concept="red", category="abstraction", preservation=None, anchor=None, epsilon=None,
                        overrides={"steps": 2, "trajectories": 4}, reason=None, requested_by="test",
                        auto_deploy=True)
    sessions = session_factory(settings.database_url)
    with sessions() as db:
        job_id = jobs.submit(db, spec, settings.model_dir, lambda job: {}).job_id
    # A file where the store's first folder goes: every upload fails until it is removed, which holds the job
    # between its last training step and its success for as long as the test needs.
    blocker = settings.var_dir / "artifacts" / "sha256"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    outcome: list[str | None] = []
    worker = threading.Thread(target=lambda: outcome.append(run_job(job_id, settings)))
    worker.start()
    deadline = time.monotonic() + 120
    while not any(e.message.startswith("storing the artifact failed") for e in all_events_direct(settings, job_id)):
        assert worker.is_alive() and time.monotonic() < deadline, "the upload never failed"
        time.sleep(0.1)
    with sessions() as db:
        assert jobs.cancel(db, job_id, Actor("moderator")).status == JobStatus.RUNNING  # flagged, not yet stopped
    blocker.unlink()  # the next upload attempt succeeds
    worker.join(timeout=60)
    assert outcome == [JobStatus.CANCELLED]
    with sessions() as db:
        job = lifecycle.get_job(db, job_id)
        assert job.status == JobStatus.CANCELLED and job.artifact_uri is None
        assert deployments.active_row(db).version is None  # auto-deploy never ran
    assert any(e.message.startswith("cancelled before it was published") for e in all_events_direct(settings, job_id))


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_that_lost_its_job_cannot_write_to_it(backend: str, tmp_path: Path, request: pytest.FixtureRequest,
                                                        model_dir: Path | None) -> None:
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else None
    settings = embedded(tmp_path, model_dir, **({"database_url": url} if url else {}))
    sessions = session_factory(settings.database_url)
    with sessions() as db:
        job_id = new_job_id()
        db.add(ErasureJob(id=job_id, status=JobStatus.QUEUED, concept="red", category="abstraction", config={},
                          requested_by="test"))
        db.commit()
        first = lifecycle.Claim.of(lifecycle.claim(db, job_id, "worker-a") or pytest.fail("no claim"))
        # Worker A stalls; the sweeper gives the job to worker B.
        assert lifecycle.requeue(db, job_id, "worker-a silent; queued again")
        second = lifecycle.Claim.of(lifecycle.claim(db, job_id, "worker-b") or pytest.fail("no claim"))
        assert second.attempt == first.attempt + 1
        progress = {"step": 5, "total": 10}
        assert not lifecycle.record_progress(db, first, progress, event=True)
        lifecycle.heartbeat(db, first)
        assert not lifecycle.finish(db, job_id, JobStatus.SUCCEEDED, "a's success", claim=first)
        assert not lifecycle.requeue(db, job_id, "a shutting down", claim=first)
        assert not lifecycle.standing(db, first).owner and lifecycle.standing(db, second).owner
        job = lifecycle.fresh(db, job_id)
        assert job.status == JobStatus.RUNNING and job.worker == "worker-b" and job.progress is None
        assert lifecycle.record_progress(db, second, progress, event=True)
        assert lifecycle.finish(db, job_id, JobStatus.SUCCEEDED, "b's success", claim=second)


def test_the_timeout_counts_across_attempts(tmp_path: Path, model_dir: Path | None) -> None:
    settings = embedded(tmp_path, model_dir, job_timeout_s=3600)
    sessions = session_factory(settings.database_url)
    with sessions() as db:
        job_id = new_job_id()
        # Requeued after a first attempt that started two hours ago.
        db.add(ErasureJob(id=job_id, status=JobStatus.QUEUED, concept="red", category="abstraction", config={},
                          requested_by="test", attempts=1, started_at=utcnow() - timedelta(hours=2)))
        db.commit()
    assert run_job(job_id, settings) == JobStatus.FAILED
    with sessions() as db:
        job = lifecycle.get_job(db, job_id)
    assert job.error is not None and "counts from the first attempt" in job.error and job.attempts == 2
