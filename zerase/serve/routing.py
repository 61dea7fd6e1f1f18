"""Routed serving: each prompt gets the erasures it names, at full strength; every other prompt, the set's fused patch.

One fused patch of fixed rank loses part of each erasure as the set grows (benchmarks/RESULTS.md: 12 characters
consolidated leave a mean Acc_e of 0.40), yet a prompt rarely names more than one or two concepts of the set.
So the pipeline's own text encoder reads each prompt as the prompt guard does (zerase.serve.guard: span features
against each erased concept's prototypes, thresholds calibrated on COCO captions and the concept's neighbours,
near-spellings read as the concept), and

- a prompt that names erased concepts gets exactly those erasures, each at weight 1, as each was trained and judged
  alone (at most MAX_ROUTED: the furthest past their thresholds);
- any other prompt (one naming none of them, or hiding one from the reader, as Ring-A-Bell's prompts do) gets the
  fallback, the set's consolidated patch (zerase.serve.consolidation), which still erases what it can;
- a routed concept the prompt spells otherwise than its erasure was trained on, in another case ("OUTLINED"), a letter
  off or with letters around it ("otulined", "superoutlined"), is encoded spelt as the concept
  (zerase.train.prompts.as_trained): the reader saw through the spelling, and the erasure acts on the tokens it
  learnt. Left as written, "an OUTLINED circle", routed to outlined's erasure, still drew an outline in 0.31 of its
  images (outlined at training seed 2, as served).

A false trip costs an unrelated prompt one erasure trained to keep the rest; a miss costs the fused patch's weaker
erasure. A prompt's cost is its own slots' rank (zerase.patch.lora routes per sample), whatever N.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from typing import Any

import torch

from zerase.patch.apply import Routed
from zerase.patch.artifact import LoraArtifact
from zerase.serve.caption_reading import Reading
from zerase.serve.guard import PromptGuard
from zerase.serve.guard_calibration import Calibration, calibrate_concept
from zerase.train.prompts import as_trained

MAX_ROUTED = 4  # erasures one prompt may get at once: bounds a prompt's served rank
ROUTES_KEPT = 4096  # prompts whose routes are remembered (a prompt seen again is not read again)
# Views read in one text-encoder pass. Padded together, a token's features change only by rounding (the encoder is
# causal and masks the padding): on the world's evaluation and attack prompts, routed in batches or one by one,
# no route differed (tests/core/test_routing.py), and reading 451 of them took 0.8 s against 1.5 s one by one.
READ_BATCH = 64
DEFAULT_CATEGORY = "entity"  # an erasure whose request's category is not known is read with this category's prompts

Calibrated = tuple[Calibration, torch.Tensor]  # a concept's threshold and its prototypes


def router_for(guard: PromptGuard, profile: Any, artifacts: Sequence[LoraArtifact],
               cache: dict[str, Calibrated] | None = None,
               categories: Sequence[str | None] | None = None) -> tuple[PromptGuard, list[dict[str, Any]]]:
    """A guard over `artifacts`' concepts (keyed by index), each calibrated on `guard`'s reader as the prompt guard
    calibrates (deterministic: the evaluation and every serving process agree), and each calibration's report.
    `cache`: "category:concept" -> calibration, kept across calls. `categories`: per artifact, its request's
    category (the artifact's config does not hold it: `EraseConfig.category` names the training pool's templates,
    None by default), which picks the prompts it is calibrated on; an unknown one reads as DEFAULT_CATEGORY."""
    cache = {} if cache is None else cache
    router = PromptGuard(guard.reader, guard.background)
    reports = []
    for i, artifact in enumerate(artifacts):
        config = artifact.metadata["config"]
        concept = str(config["concept"])
        category = (categories[i] if categories is not None else None) or config.get("category") or DEFAULT_CATEGORY
        key = f"{category}:{concept}"
        if key not in cache:
            cache[key] = calibrate_concept(guard, profile, concept, category)
        calibration, prototypes = cache[key]
        router.add(str(i), concept, None, calibration.threshold, prototypes)
        reports.append({"concept": concept, "category": category, "threshold": calibration.threshold,
                        "detection": calibration.detection, "attack_detection": calibration.attack_detection,
                        "false_positives": calibration.false_positives})
    return router, reports


def routed(router: PromptGuard, artifacts: Sequence[LoraArtifact], fallback: LoraArtifact | None) -> Routed:
    """The set served per prompt (the module's docstring): slot 0 the fallback (when there is one), then one slot
    per erasure, routed by `router` (from `router_for` on the same `artifacts`)."""
    first = 1 if fallback is not None else 0
    default = (0,) if fallback is not None else ()
    thresholds = {c.key: c.threshold for c in router.concepts}

    known: dict[str, tuple[tuple[int, ...], str]] = {}  # prompt -> (its slots, the text encoded for it)
    lock = threading.Lock()

    def one(prompt: str, readings: Sequence[Reading]) -> tuple[tuple[int, ...], str]:
        trips = sorted(router.trips(prompt, readings), key=lambda t: t.score - thresholds[t.key],
                       reverse=True)[:MAX_ROUTED]
        named = sorted({first + int(t.key) for t in trips})
        return tuple(named) or default, as_trained(prompt, [t.concept for t in trips])

    def read(prompts: Sequence[str]) -> list[tuple[tuple[int, ...], str]]:
        with lock:
            new = [p for p in dict.fromkeys(prompts) if p not in known]
            if new:  # a call's new prompts, every view, in one text-encoder pass (READ_BATCH)
                if len(known) + len(new) > ROUTES_KEPT:
                    known.clear()
                views = router.reader.views_many(new, batch=READ_BATCH)
                known.update({p: one(p, v) for p, v in zip(new, views, strict=True)})
            return [known[p] for p in prompts]

    slots = ((fallback,) if fallback is not None else ()) + tuple(artifacts)
    return Routed(slots, lambda prompts: [r for r, _ in read(prompts)], default,
                  spell=lambda prompts: [text for _, text in read(prompts)])


def routed_for(pipe: Any, profile: Any, artifacts: Sequence[LoraArtifact], fallback: LoraArtifact | None, *,
               categories: Sequence[str | None] | None = None, guard: PromptGuard | None = None,
               cache: dict[str, Calibrated] | None = None) -> tuple[Routed, list[dict[str, Any]]]:
    """`routed` with its router calibrated on `pipe`'s text encoder (`guard`: one already reading it, whose COCO
    readings are reused; by default one kept per pipeline, with its calibrations; `categories`: as `router_for`),
    and the router's per-concept calibration reports."""
    if guard is None:
        with _lock:
            if pipe not in _readers:
                _readers[pipe] = (PromptGuard.for_pipeline(pipe), {})
            guard, kept = _readers[pipe]
        cache = kept if cache is None else cache
    router, reports = router_for(guard, profile, artifacts, cache, categories)
    return routed(router, artifacts, fallback), reports


# Per pipeline, a reader and its calibrations: a worker judges many jobs and sets on one model, and reading the COCO
# captions the thresholds rest on is most of a calibration.
_readers: weakref.WeakKeyDictionary[Any, tuple[PromptGuard, dict[str, Calibrated]]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()
