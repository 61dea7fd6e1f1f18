"""Generation with the active safety patch, dynamically batched (service.deployments.batching), fail closed.

Before each batch the service reads the active deployment version (one primary-key lookup); when it
changed, the deployment's artifacts are fetched from the store (cached locally by sha256, verified on
every use), loaded and applied with their weights. The version check, the patch and the sampling of a
batch happen under one lock, so the version a response reports is the one applied to its image. If the
active version cannot be applied, nothing is generated (PatchUnavailable -> 503).
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from service.core import metrics
from service.core.errors import Invalid, Unavailable
from service.core.logs import adopt_model_libraries
from service.core.settings import Settings
from service.core.store import ArtifactStore, file_sha256
from service.deployments import service as deployments
from service.deployments.admission import Admission, GenerationBusy
from service.deployments.batching import Batcher, Pending
from service.deployments.contract import BASE_VERSION, FUSED, MAX_PROMPT_TOKENS, MAX_SIDE, MIN_SIDE, ROUTED

log = logging.getLogger(__name__)

# Without ZERASE_GENERATION_MAX_SIDE, a side may be up to this many times the model's default: the cost
# of a request grows with the square of its token count, and one request must not stall the queue.
DEFAULT_SIDE_FACTOR = 2


class InvalidGeneration(Invalid):
    """A request the model cannot serve (checked against the loaded pipeline); `field` names the input."""


class GuardRefused(Invalid):
    """The prompt trips the guard of a takedown (ZERASE_GUARD_ACTION=refuse). Only the takedown's id is named:
    a generator key learns no more of the concept than that one exists."""

    code = "takedown"


class PatchUnavailable(Unavailable):
    """The active deployment cannot be applied: generation refuses rather than serve the base model."""

    code = "safety_patch_unavailable"


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    negative_prompt: str | None = None
    seed: int = 0
    steps: int | None = None  # None: the model's default
    width: int | None = None
    height: int | None = None
    guidance_scale: float | None = None


@dataclass(frozen=True)
class Generated:
    image: np.ndarray  # (H, W, 3) uint8
    seed: int
    steps: int
    width: int
    height: int
    guidance_scale: float
    patch_version: int  # 0: the base model
    erasure_ids: tuple[str, ...]
    guarded: tuple[str, ...] = ()  # takedowns whose guard rewrote the prompt (ZERASE_GUARD_ACTION=anchor)


class GenerationService:
    """Owns its own pipeline object: training in the same process patches the shared one
    (service.erasures.runner.base_pipeline) for minutes, and a request must never see a training LoRA."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: ArtifactStore) -> None:
        self.settings, self.sessions, self.store = settings, sessions, store
        self.cache_dir = settings.var_dir.resolve() / "patch-cache"
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self.admission = Admission(settings.generation_queue_size, settings.generation_per_key)
        self.batcher: Batcher[Generated] = Batcher(self._run_batch, settings.generation_max_batch,
                                                   settings.generation_max_wait_ms / 1000)
        self._pipe: Any = None
        self._patched: Any = None
        self._applied: int | None = None  # None: nothing known to be applied (start, or a failed apply)
        self._erasure_ids: tuple[str, ...] = ()
        self._guard: Any = None  # zerase.serve.guard.PromptGuard on this pipeline, made on first use
        self._calibrated: dict[str, Any] = {}  # "category:concept" -> (Calibration, prototypes): deterministic
        self._routing: dict[str, Any] = {}  # the same, for routed serving (zerase.serve.routing: its own limits)

    def generate(self, request: GenerationRequest, key_id: str | None = None) -> Generated:
        """Generate under the active patch; GenerationBusy at once if the queue or `key_id`'s share is full."""
        started, outcome = time.perf_counter(), "error"
        try:
            with self.admission.admit(key_id), metrics.GENERATIONS_IN_PROGRESS.track_inprogress():
                sampling = self._sampling(self._pipeline(), request)  # a 422 before it queues
                result = self.batcher.submit((sampling, request.negative_prompt or ""), (request, sampling))
            outcome = "ok"
        except (InvalidGeneration, GuardRefused, PatchUnavailable, GenerationBusy) as exc:
            outcome = {InvalidGeneration: "invalid", GuardRefused: "refused",
                       PatchUnavailable: "unavailable"}.get(type(exc), "busy")
            raise
        finally:
            metrics.GENERATION_SECONDS.labels(outcome).observe(time.perf_counter() - started)
        return result

    def generate_base(self, request: GenerationRequest, key_id: str | None = None) -> Generated:
        """The base model's image (no erasure), for an admin comparing: the patches come off under the model
        lock and the next batch puts the active set back (from the local artifact cache)."""
        from zerase.model.generate import generate

        with self.admission.admit(key_id):
            sampling = self._sampling(self._pipeline(), request)
            with self._lock:
                self._patched.clear()
                self._applied = None
                image = generate(self._pipe, [request.prompt], [request.seed], sampling,
                                 negative_prompt=request.negative_prompt or "")[0]
        return Generated(image, request.seed, sampling.steps, sampling.width, sampling.height,
                         sampling.guidance_scale, BASE_VERSION, ())

    def validate(self, request: GenerationRequest) -> Any:
        """The sampling settings `request` would run with, or InvalidGeneration (a 422 naming the field):
        the checks `generate` makes first, without generating."""
        return self._sampling(self._pipeline(), request)

    def _run_batch(self, batch: Sequence[Pending[Generated]]) -> list[Generated | BaseException]:
        """One pipeline call for the batch: version check, patch and sampling as one unit under the model lock,
        so every image reports the version it was made under."""
        from zerase.model.generate import generate

        requests = [member.payload[0] for member in batch]
        sampling = batch[0].payload[1]
        with self._lock:
            version = self._sync()
            # Each prompt checked alone, under the version this batch serves: a batch-mate changes nothing.
            checked = [self._guarded(r.prompt) for r in requests]
            served = [(r, c) for r, c in zip(requests, checked, strict=True) if not isinstance(c, BaseException)]
            images = iter(generate(self._pipe, [c[0] for _, c in served], [r.seed for r, _ in served], sampling,
                                   negative_prompt=requests[0].negative_prompt) if served else [])
            erasure_ids = self._erasure_ids
        return [c if isinstance(c, BaseException) else
                Generated(next(images), r.seed, sampling.steps, sampling.width, sampling.height,
                          sampling.guidance_scale, version, erasure_ids, c[1])
                for r, c in zip(requests, checked, strict=True)]

    def _guarded(self, prompt: str) -> tuple[str, tuple[str, ...]] | GuardRefused:
        """The prompt to sample and the takedowns that rewrote it, or the refusal (ZERASE_GUARD_ACTION)."""
        if self._guard is None or not self._guard.concepts:
            return prompt, ()
        if self.settings.guard_action == "anchor":
            rewritten, trips = self._guard.rewrite(prompt)
            if self._guard.check(rewritten) is None:
                if trips:
                    metrics.GUARD_REWRITES.inc()
                return rewritten, tuple(dict.fromkeys(t.key for t in trips))
        trip = self._guard.check(prompt)
        if trip is None:
            return prompt, ()
        metrics.GUARD_REFUSALS.inc()
        return GuardRefused(f"the prompt matches takedown {trip.key}; it is not generated", "prompt")

    def sync(self) -> int:
        """Apply the active deployment now (calibrating any new guard entry) rather than on the next request: the
        API does so after a takedown in a process that serves the model, so its response can tell how it went."""
        self._pipeline()
        with self._lock:
            return self._sync()

    def _guard_object(self) -> Any:
        if self._guard is None:
            from zerase.serve.guard import PromptGuard

            self._guard = PromptGuard.for_pipeline(self._pipe)
        return self._guard

    def _apply_guard(self, entries: Sequence[dict[str, Any]]) -> None:
        """Serve `entries` as the guard (under the model lock): each concept calibrated on this model once per
        process (deterministic: every process agrees), applied only if it passes its own check; outcomes not yet
        on their jobs are recorded there."""
        from zerase.model.profiles import profile_for
        from zerase.serve.guard_calibration import calibrate_concept

        guard = self._guard_object()
        guard.concepts = []
        fresh: dict[str, dict[str, Any]] = {}
        for e in entries:
            key = f"{e['category']}:{e['concept']}"
            if key not in self._calibrated:
                self._calibrated[key] = calibrate_concept(
                    guard, profile_for(self.settings.model_dir), e["concept"], e["category"],
                    coco_limit=self.settings.guard_max_coco_false_positives,
                    others_limit=self.settings.guard_max_neighbour_false_positives,
                    min_detection=self.settings.guard_min_detection)
            calibration, prototypes = self._calibrated[key]
            fresh[e["erasure_id"]] = {"passes": calibration.passes, "calibration": calibration.to_dict(),
                                      "misses": calibration.misses()}
            if calibration.passes:
                guard.add(e["erasure_id"], e["concept"], e.get("anchor"), calibration.threshold, prototypes)
        if fresh:  # only jobs still waiting for theirs are written (one read each otherwise)
            from service.deployments.guard import record_calibration

            with self.sessions() as db:
                record_calibration(db, fresh)

    def _pipeline(self) -> Any:
        with self._loading:  # once per process; the model lock is for sampling
            return self._load()

    def _load(self) -> Any:
        if self._pipe is None:
            import torch

            from zerase.model.pipeline import load_pipeline
            from zerase.patch.apply import PatchedPipeline

            adopt_model_libraries()  # now imported: their logs go through our handler too
            self._pipe = load_pipeline(self.settings.model_dir, self.settings.device,
                                       getattr(torch, self.settings.dtype))
            self._patched = PatchedPipeline(self._pipe)
        return self._pipe

    def _sampling(self, pipe: Any, request: GenerationRequest) -> Any:
        from zerase.model.profiles import profile_for
        from zerase.model.sampling import SamplingSettings

        profile = profile_for(self.settings.model_dir)
        # Counted as the pipeline encodes them (chat-templated), so nothing past the cut is silently dropped.
        tokens = profile.captions.count(request.prompt)
        if tokens > MAX_PROMPT_TOKENS:
            raise InvalidGeneration(f"{tokens} tokens with the chat template; at most {MAX_PROMPT_TOKENS}", "prompt")
        if request.negative_prompt and profile.captions.count(request.negative_prompt) > MAX_PROMPT_TOKENS:
            raise InvalidGeneration(f"more than {MAX_PROMPT_TOKENS} tokens with the chat template", "negative_prompt")
        default = profile.sampling
        multiple = math.lcm(16, pipe.vae_scale_factor * 2)  # the latent is made of 2x2 patches
        sides = {"width": request.width or default.width, "height": request.height or default.height}
        largest = self.settings.generation_max_side or DEFAULT_SIDE_FACTOR * max(default.width, default.height)
        top = min(MAX_SIDE, largest)
        for name, side in sides.items():
            if side % multiple or not MIN_SIDE <= side <= top:
                raise InvalidGeneration(f"{side} is not a multiple of {multiple} in [{MIN_SIDE}, {top}]", name)
        steps = request.steps or default.steps
        if steps not in profile.served_steps:
            # A patch has only seen the timesteps of the schedules it was trained on (ModelProfile.served_steps).
            raise InvalidGeneration(f"{steps} steps is not served: erasures on this model are trained on "
                                    f"{', '.join(map(str, profile.served_steps))} steps", "steps")
        guidance = default.guidance_scale if request.guidance_scale is None else request.guidance_scale
        return SamplingSettings(steps=steps, guidance_scale=guidance, **sides)

    def _sync(self) -> int:
        """Apply the active deployment if it is not the one applied; return its version."""
        with self.sessions() as db:  # the common case: one primary-key read, nothing changed
            active = deployments.active_row(db).version
            version = active if active is not None else BASE_VERSION
            if version == self._applied:
                return version
            deployment = deployments.get(db, version) if active is not None else None
            entries = deployment.entries if deployment is not None else []
            fused = deployment.fused if deployment is not None and deployment.fusion in FUSED else None
            routed = deployment is not None and deployment.fusion == ROUTED
            guard = list(deployment.guard or []) if deployment is not None else []
        self._applied = None  # until the new set is fully in place, nothing counts as applied
        try:
            from zerase.patch.artifact import load_artifact

            self._apply_guard(guard)

            if fused is not None and routed:  # per prompt: the erasures it names, else the fused patch
                self._patched.apply_routed(self._routed(entries, fused))
            elif fused is not None:  # several erasures served as their one fused patch (zerase.serve.fusion)
                self._patched.apply([load_artifact(self._local_copy(fused["uri"], fused["sha256"]), self._pipe)],
                                    [1.0])
            else:
                artifacts = [load_artifact(self._local_copy(e["uri"], e["sha256"]), self._pipe) for e in entries]
                self._patched.apply(artifacts, [float(e["weight"]) for e in entries])
        except Exception as exc:
            self._patched.clear()
            metrics.GENERATION_PATCH_VERSION.set(-1)
            # The cause (a local path, a parser's message) is for the log; the client gets a stable answer.
            log.exception("safety patch version %d cannot be applied", version)
            raise PatchUnavailable(f"safety patch version {version} cannot be applied, so no image is "
                                   "generated; see the server log") from exc
        self._applied, self._erasure_ids = version, tuple(e["erasure_id"] for e in entries)
        metrics.GENERATION_PATCH_VERSION.set(version)
        log.info("serving safety patch version %d (%d erasures, %d guarded)", version, len(entries), len(guard))
        return version

    def _routed(self, entries: Sequence[dict[str, Any]], fused: dict[str, Any]) -> Any:
        """The version's routed patch (zerase.serve.routing), its router calibrated as its evaluation's was."""
        from zerase.model.profiles import profile_for
        from zerase.patch.artifact import load_artifact
        from zerase.serve.routing import routed_for

        artifacts = [load_artifact(self._local_copy(e["uri"], e["sha256"]), self._pipe) for e in entries]
        fallback = load_artifact(self._local_copy(fused["uri"], fused["sha256"]), self._pipe)
        return routed_for(self._pipe, profile_for(self.settings.model_dir), artifacts, fallback,
                          categories=[e.get("category") for e in entries], guard=self._guard_object(),
                          cache=self._routing)[0]

    def _local_copy(self, uri: str, sha256: str) -> Path:
        return local_copy(self.store, self.cache_dir, uri, sha256)


def local_copy(store: ArtifactStore, cache_dir: Path, uri: str, sha256: str) -> Path:
    """The artifact's bytes as a local file under `cache_dir` (content-addressed), verified against its sha256
    (fetched from the store if needed)."""
    path = cache_dir / f"{sha256}.safetensors"
    if path.exists() and file_sha256(path) == sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".incoming-")
    try:
        with os.fdopen(fd, "wb") as out:
            store.fetch(uri, sha256, out)  # raises ArtifactIntegrityError on a hash mismatch
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
