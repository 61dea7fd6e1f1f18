"""What a trained job leaves behind: its artifact, uploaded with retries and read back before the job
may succeed, and its report (the model's evaluator's reading and a before/after preview), which never
fails it.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from service.core.settings import Settings
from service.core.store import ArtifactStore, StoredArtifact
from service.erasures.contract import EventKind
from service.erasures.errors import JobNotFound
from service.erasures.lifecycle import add_event, get_job

if TYPE_CHECKING:
    from zerase.patch.apply import Routed
    from zerase.patch.artifact import LoraArtifact

log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """The store did not take (or did not give back intact) an object after every attempt."""


def upload(store: ArtifactStore, path: Path, what: str, sessions: sessionmaker[Session], job_id: str,
           settings: Settings) -> StoredArtifact:
    """Put `path`, then fetch it back through the sha256 check: only an object that reads back intact
    counts as stored. Any error is retried `store_attempts` times with exponential backoff, each retry an
    event on the job."""
    attempts = settings.store_attempts
    for attempt in range(1, attempts + 1):
        try:
            stored = store.put(path)
            with open(os.devnull, "wb") as sink:
                store.fetch(stored.uri, stored.sha256, sink)
            if attempt > 1:
                _event(sessions, job_id, EventKind.INFO, f"{what} stored on attempt {attempt}",
                       {"store_attempt": attempt})
            return stored
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            if attempt == attempts:
                raise StoreUnavailable(f"could not store the {what} after {attempts} attempts ({error})") from exc
            delay = settings.store_retry_base_s * 2 ** (attempt - 1)
            log.warning("storing the %s failed (attempt %d/%d): %s", what, attempt, attempts, error)
            _event(sessions, job_id, EventKind.INFO,
                   f"storing the {what} failed (attempt {attempt}/{attempts}), retrying in {delay:g}s: {error}",
                   {"store_attempt": attempt, "retry_in_s": delay, "error": error})
            time.sleep(delay)
    raise AssertionError("unreachable")


def strengthen(pipe: Any, artifact: LoraArtifact, path: Path, sessions: sessionmaker[Session], job_id: str,
               settings: Settings) -> LoraArtifact:
    """The round's artifact at the strength it will be served at (zerase.evaluate.strength), rewritten at `path` when
    that is not 1: the job is judged, published and served so. As trained when the evaluator cannot read the concept,
    or when the search fails (an error event; the evaluation still judges it)."""
    from zerase.evaluate.strength import StrengthLimits, search_strength
    from zerase.model.profiles import profile_for
    from zerase.patch.artifact import load_artifact, write_artifact

    if settings.served_strengths == [1.0]:
        return artifact
    try:
        profile, category = profile_for(settings.model_dir), _category(sessions, job_id)
        concept = str(artifact.metadata["config"]["concept"])
        evaluator = _evaluator(profile, category, concept, settings)
        if evaluator is None or not evaluator.can_read(concept):
            return artifact
        limits = StrengthLimits(settings.strength_target, settings.strength_kept_limit,
                                settings.strength_coherence_limit)
        found = search_strength(pipe, artifact, evaluator, profile.sampling, n_seeds=settings.evaluation_seeds,
                                strengths=settings.served_strengths, limits=limits, category=category)
    except Exception as exc:
        log.exception("the strength search failed")
        _event(sessions, job_id, EventKind.ERROR, f"strength search failed, served as trained: "
               f"{type(exc).__name__}: {exc}", {"strength": 1.0})
        return artifact
    tried = ", ".join(f"{t['strength']:g}x {t['acc_e']:.2f}" + (f"/{t['attack']:.2f}" if t["attack"] is not None
                                                                  else "") for t in found.tried)
    _event(sessions, job_id, EventKind.INFO, f"served at {found.strength:g}x its trained strength (Acc_e/attacks on "
           f"calibration seeds: {tried})", {"strength": found.strength, "tried": found.tried})
    if found.strength == 1.0:
        return artifact
    write_artifact(artifact.at_strength(found.strength), path)
    return load_artifact(path, pipe)


def report(pipe: Any, artifact: LoraArtifact, sessions: sessionmaker[Session], job_id: str,
           settings: Settings) -> tuple[dict[str, Any], Any, LoraArtifact | Routed | None]:
    """(evaluation, preview image or None, what it was judged as served as, or None). A failure is an error
    event and `{"error": ...}`, never an exception: the artifact is verified by now, and the job succeeds without
    its report."""
    from zerase.evaluate.evaluation import erasure_report
    from zerase.evaluate.evaluators.select import missing_reason
    from zerase.model.profiles import profile_for

    started = time.monotonic()
    _event(sessions, job_id, EventKind.INFO, "evaluation started", {"stage": "evaluation"})
    try:
        profile, category = profile_for(settings.model_dir), _category(sessions, job_id)
        concept = str(artifact.metadata["config"]["concept"])
        evaluator = _evaluator(profile, category, concept, settings)
        served = _served_alone(pipe, artifact, profile, category, sessions, job_id, settings)
        result = erasure_report(pipe, artifact, profile, settings.evaluation_seeds, category=category,
                                evaluator=evaluator, kept_images=settings.evaluation_kept_images, served=served)
        result.evaluation["judged_as"] = settings.fusion if served is not None else "raw"
        result.evaluation["served_strength"] = float(artifact.metadata.get("strength", 1.0))
        if evaluator is None and "skipped" in result.evaluation:
            result.evaluation["skipped"] = missing_reason(category, concept, nudenet=settings.nudenet)
    except Exception as exc:
        log.exception("evaluation failed")
        error = f"{type(exc).__name__}: {exc}"
        _event(sessions, job_id, EventKind.ERROR, f"evaluation failed: {error}", {"evaluation": "failed"})
        return {"error": error}, None, None
    evaluation = result.evaluation
    _event(sessions, job_id, EventKind.INFO, _summary(evaluation), {"evaluation": evaluation})
    if evaluator is not None and result.plan is not None and "acc_e" in evaluation and settings.redteam:
        evaluation["redteam"] = _red_team(pipe, artifact, served or artifact, evaluator, result.plan, sessions,
                                          job_id, settings, time.monotonic() - started)
    return evaluation, result.preview, served


def store_served(served: LoraArtifact | Routed | None, store: ArtifactStore, sessions: sessionmaker[Session],
                 job_id: str, settings: Settings) -> dict[str, Any] | None:
    """The patch the job was judged as served as (routed: its fallback, the rest is the artifact itself), stored like
    the artifact: a deployment of this erasure alone serves exactly it (service.deployments). None when there is
    none (ZERASE_FUSION=average)."""
    from zerase.patch.apply import Routed
    from zerase.serve.fusion import save_fused

    if served is None:
        return None
    if isinstance(served, Routed):
        served = served.slots[0]
    with tempfile.TemporaryDirectory() as tmp:
        stored = upload(store, save_fused(served, Path(tmp) / "served.safetensors"), "served patch", sessions, job_id,
                        settings)
    return {"uri": stored.uri, "sha256": stored.sha256, "bytes": stored.bytes, "rank": served.metadata["rank"],
            "method": settings.fusion}


def _served_alone(pipe: Any, artifact: LoraArtifact, profile: Any, category: str | None,
                  sessions: sessionmaker[Session], job_id: str,
                  settings: Settings) -> LoraArtifact | Routed | None:
    """The patch `/generate` would serve for this erasure alone (ZERASE_FUSION; None for "average", where that is the
    LoRA itself; "routed": the erasure to prompts naming the concept, its consolidated patch to the others): the job is
    judged, and retuned, on it. Measured on the world, the consolidated patch keeps far more than the raw LoRA at the
    same Acc_e (benchmarks/RESULTS.md, "One erasure, raw or as served")."""
    from zerase.serve.served_patch import served_patch

    if settings.fusion == "average":
        return None
    started = time.monotonic()
    served: Any = served_patch(pipe, [artifact], profile, settings.fusion)
    if settings.fusion == "routed":
        from zerase.serve.routing import routed_for

        served = routed_for(pipe, profile, [artifact], served, categories=[category])[0]
    seconds = round(time.monotonic() - started, 2)
    _event(sessions, job_id, EventKind.INFO, f"judged as served: the {settings.fusion} patch of this erasure alone, "
           f"made in {seconds:g}s", {"judged_as": settings.fusion, "seconds": seconds})
    return served


def store_preview(preview: Any, store: ArtifactStore, sessions: sessionmaker[Session], job_id: str,
                  settings: Settings) -> StoredArtifact | None:
    """The published round's before/after PNG in the store; None (and an error event) if it could not be stored."""
    from PIL import Image

    if preview is None:
        return None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "preview.png"
            Image.fromarray(preview).save(path)
            return upload(store, path, "preview", sessions, job_id, settings)
    except Exception as exc:
        log.exception("preview not stored")
        _event(sessions, job_id, EventKind.ERROR, f"preview not stored: {type(exc).__name__}: {exc}",
               {"preview": "failed"})
        return None


def _red_team(pipe: Any, artifact: LoraArtifact, served: LoraArtifact | Routed, evaluator: Any, plan: Any,
              sessions: sessionmaker[Session], job_id: str, settings: Settings, spent_s: float) -> list[dict[str, Any]]:
    """Ring-A-Bell and UnlearnDiffAtk against `served` (the artifact as it would be served) (zerase.evaluate.redteam),
    within what is left of the evaluation's time budget; each attack's result is an event. A failing attack is an error
    event and is left out, never a failed job: the deploy gate then judges the attacks that ran."""
    from zerase.evaluate.plan import ERASED
    from zerase.evaluate.redteam.common import RedTeamBudget
    from zerase.evaluate.redteam.runner import ATTACKS, red_team
    from zerase.train.config import EraseConfig

    config = EraseConfig.from_dict(artifact.metadata["config"])
    concept = plan.concept  # as the evaluator spells it; the sample evaluation's own plan
    prompts = list(dict.fromkeys(s.prompt for s in plan.shots if s.role == ERASED))
    budget = RedTeamBudget(prompts=settings.redteam_prompts, steps=settings.redteam_steps)
    results: list[dict[str, Any]] = []
    for name in ATTACKS:
        if spent_s > settings.evaluation_budget_s:
            _event(sessions, job_id, EventKind.INFO, f"red team: {name} not run, the evaluation's budget of "
                   f"{settings.evaluation_budget_s:g}s is spent", {"redteam": name, "skipped": "budget"})
            continue
        started = time.monotonic()
        try:
            result = red_team(pipe, served, evaluator, concept, prompts=prompts, budget=budget,
                              settings=config.sampling, attacks=(name,))[0]
        except Exception as exc:
            log.exception("red team attack %s failed", name)
            _event(sessions, job_id, EventKind.ERROR, f"red team: {name} failed: {type(exc).__name__}: {exc}",
                   {"redteam": name, "error": str(exc)})
            continue
        finally:
            spent_s += time.monotonic() - started
        entry = {"name": result.name, "success_rate": result.success_rate,
                 "success_rate_unpatched": result.success_rate_unpatched, "prompts": result.prompts,
                 "inputs": result.inputs, "seconds": result.seconds}
        results.append(entry)
        _event(sessions, job_id, EventKind.INFO, f"red team: {name} succeeds on {result.success_rate:.2f} of its "
               f"images ({result.success_rate_unpatched:.2f} without the erasure), {result.seconds:g}s",
               {"redteam": entry})
    return results


def _evaluator(profile: Any, category: str | None, concept: str, settings: Settings) -> Any:
    """zerase.evaluate.evaluators: the model's own evaluator, else NudeNet (nudity), else CLIP (ZERASE_CLIP_DIR)."""
    from zerase.evaluate.evaluators.select import evaluator_for

    return evaluator_for(profile, category, concept=concept, clip_dir=settings.clip_dir, nudenet=settings.nudenet,
                         prompts=settings.evaluation_prompts, device=settings.device)


def _category(sessions: sessionmaker[Session], job_id: str) -> str | None:
    """The job's category, which picks the evaluation protocol (None: inferred from the concept)."""
    try:
        with sessions() as db:
            return get_job(db, job_id).category
    except JobNotFound:
        return None


def _summary(e: dict[str, Any]) -> str:
    if "skipped" in e:
        return f"evaluation skipped: {e['skipped']}"
    return (f"evaluated: Acc_e {e['acc_e_before']:.2f}→{e['acc_e']:.2f}, Acc_ir {e['acc_ir_before']:.2f}→"
            f"{e['acc_ir']:.2f}, Ha {e['ha']:.2f}, drift {e['drift']:.3f} ({e['images']} images, {e['seconds']}s)")


def _event(sessions: sessionmaker[Session], job_id: str, kind: EventKind, message: str,
           data: dict[str, Any] | None = None) -> None:
    with sessions() as db:
        add_event(db, job_id, kind, message, data)
        db.commit()
