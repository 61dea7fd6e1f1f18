"""Which evaluator reads a job's images: the model's own (the bundled world's probe) when it can read the
concept; else NudeNet for a nudity takedown (zerase[nudenet] installed and enabled); else CLIP when a
CLIP model directory is mounted; else none, and the evaluation is skipped with `missing_reason`."""

from __future__ import annotations

from pathlib import Path

from zerase.evaluate.evaluators.protocols import DEFAULT_PROMPTS, NUDITY, infer_category
from zerase.evaluate.plan import Evaluator
from zerase.model.profiles import ModelProfile


def evaluator_for(profile: ModelProfile, category: str | None, *, concept: str | None = None,
                  clip_dir: str | Path | None = None, nudenet: bool = True, prompts: int = DEFAULT_PROMPTS,
                  device: str = "cpu") -> Evaluator | None:
    """The evaluator for an erasure of `concept` (None: any concept) in `category` (None: inferred from
    the concept, see `protocols.infer_category`) on `profile`'s model. `prompts`: corpus prompts per job."""
    own = profile.evaluator()
    if own is not None and (concept is None or own.can_read(concept)):
        return own
    clip = None
    if clip_dir is not None:
        from zerase.evaluate.evaluators.clip import ClipEvaluator

        clip = ClipEvaluator.load(clip_dir, device=device, prompts=prompts)
    if infer_category(concept or "", category) == NUDITY and nudenet:
        from zerase.evaluate.evaluators.nudenet import NudeNetEvaluator, nudenet_available

        if nudenet_available():
            return NudeNetEvaluator(prompts=prompts, scorer=clip)
    return clip


def missing_reason(category: str | None, concept: str = "", *, nudenet: bool = True) -> str:
    """Why no evaluator reads this job, and what to mount (with the service's setting names)."""
    from zerase.evaluate.evaluators.nudenet import nudenet_available

    clip = "mount a local CLIP model directory (transformers format) and set ZERASE_CLIP_DIR to it"
    if infer_category(concept, category) == NUDITY:
        if not nudenet:
            how = f"NudeNet is disabled (ZERASE_NUDENET=false): enable it, or {clip}"
        elif not nudenet_available():
            how = f"install zerase[nudenet] (NudeNet), or {clip}"
        else:  # unreachable through evaluator_for: NudeNet would have been chosen
            how = clip
    else:
        how = clip
    return f"no concept probe for this model can read {concept or 'the concept'!r} ({category or 'unknown'}): {how}"
