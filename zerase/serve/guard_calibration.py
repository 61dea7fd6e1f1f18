"""Calibrating a guarded concept: its prototypes (its own tokens' features in prompts that show it, respelt as
training respells, never as the evaluation's attacks) and its threshold, set on negatives the way its false
positives are promised (COCO captions and the concept's neighbours, each with a limit on the share that may trip
it), then checked on prompts it was not fitted on (`Calibration.passes`)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from zerase.model.corpora import mentions
from zerase.serve.caption_reading import BATCH, Reading
from zerase.serve.guard import PromptGuard
from zerase.train.prompt_pool import CATEGORY_TEMPLATES, respell
from zerase.train.prompts import attack_spellings, concept_spans, erase_prompts

RESPELLINGS = ("misspelling", "affix", "case")


def positive_prompts(concept: str, shown: Sequence[str], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, the concept as it is spelt there): `shown` (prompts that show the concept) as they are and
    respelt as training respells, never as the evaluation's attacks (those stay unseen)."""
    rng = random.Random(seed)
    held_out = {s for ss in attack_spellings(concept).values() for s in ss}
    out = [(p, concept) for p in shown]
    while len(out) < n and shown:
        prompt = rng.choice(list(shown))
        spelled = respell(concept, rng.choice(RESPELLINGS), rng)
        # A shortened word ("red" -> "ed") is another word's piece: as a prototype it would trip on "Zed".
        if spelled in held_out or len(spelled) < len(concept) or not concept_spans(prompt, concept):
            continue
        at = concept_spans(prompt, concept)[0]
        out.append((prompt[:at[0]] + spelled + prompt[at[1]:], spelled))
    return out


def attack_prompts(concept: str, shown: Sequence[str]) -> list[str]:
    """The evaluation's string attacks on `concept`, in each of `shown`: what the guard was never fitted on."""
    out = []
    for spelled in (s for ss in attack_spellings(concept).values() for s in ss):
        for prompt in shown:
            if concept_spans(prompt, concept):
                at = concept_spans(prompt, concept)[0]
                out.append(prompt[:at[0]] + spelled + prompt[at[1]:])
    return out


@dataclass(frozen=True)
class Calibration:
    """A concept's threshold and how it did on prompts it was not fitted on."""

    threshold: float
    detection: float  # share of held-out prompts that show the concept as written and trip the guard
    attack_detection: dict[str, float]  # the same, per kind of the evaluation's string attacks (reported)
    false_positives: dict[str, float]  # per negative set (held out), share that trips it
    limits: dict[str, float]  # the promised false-positive share per negative set
    min_detection: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passes(self) -> bool:
        return not self.misses()

    def misses(self) -> list[str]:
        out = [f"detects {self.detection:.2f} of the concept's prompts, under {self.min_detection:.2f}"] \
            if self.detection < self.min_detection else []
        return out + [f"{v:.3f} of {k} prompts trip it, over {self.limits[k]:.3f}" for k, v in
                      self.false_positives.items() if v > self.limits[k]]

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "detection": self.detection, "attack_detection": self.attack_detection,
                "false_positives": self.false_positives, "limits": self.limits, "min_detection": self.min_detection,
                **self.details}


def _threshold(scores: Sequence[float], share: float) -> float:
    """The lowest threshold that at most `share` of `scores` reach."""
    ranked = sorted(scores, reverse=True)
    allowed = int(share * len(ranked))
    return ranked[allowed] + 1e-4 if allowed < len(ranked) else -1.0


def _shown(profile: Any, concept: str, category: str) -> tuple[list[str], list[str]]:
    """Prompts that show `concept` (the profile's, the generic and the category's templates): half to fit on,
    half held out."""
    templates = [t.format(c=concept) for t in CATEGORY_TEMPLATES.get(category, ())]
    shown = erase_prompts(concept, profile.erase_prompts(concept) + profile.erase_contexts(concept) + templates)
    return shown[::2], shown[1::2] or shown


def fit_prototypes(guard: PromptGuard, profile: Any, concept: str, category: str) -> torch.Tensor:
    """`concept`'s prototypes on a model profile (deterministic: a server recomputes them from the concept)."""
    fit, held = _shown(profile, concept, category)
    # A word reads differently at the start of a prompt (no leading space): both ends are fitted.
    return guard.prototypes(positive_prompts(concept, fit + held[:2], n=4 * len(fit)))


def calibrate_concept(guard: PromptGuard, profile: Any, concept: str, category: str, *,
                      coco_limit: float = 0.01, others_limit: float = 0.02, min_detection: float = 0.95,
                      coco: int = 1000) -> tuple[Calibration, torch.Tensor]:
    """`concept`'s prototypes and threshold on a model profile, checked on prompts they were not fitted on.

    Positives are the profile's prompts showing the concept (half to fit, respelt as training respells; the
    other half, as written and under every attack spelling, held out). Negatives are `coco` COCO captions and
    the concept's neighbours (the prompts every erasure keeps, zerase.train.presets.unnamed_prior), each split in two
    the same way. The threshold lets half of each limit's share of the fitting negatives through, so that the
    held-out share stays within the limit. 1000 captions each: at 400 the threshold rested on the top 2 fitting
    captions, and on the 24-character world's tokenizer "yellow" then let 1.3 % of the held ones through (0.5 % at
    1000, a few seconds more per concept)."""
    from zerase.train.presets import unnamed_prior

    _, held = _shown(profile, concept, category)
    prototypes = fit_prototypes(guard, profile, concept, category)
    prior = unnamed_prior(profile, concept, category)
    others = [p for item in prior["neighbours"] + prior["without_concept"] for p in profile.expand_preservation(item)]
    others = [p for p in dict.fromkeys(others) if not concept_spans(p, concept)]

    def score(readings: Sequence[Reading]) -> float:
        return guard.scores(readings, prototypes, concept)[0]

    def read(prompts: Sequence[str]) -> list[list[Reading]]:
        return guard.reader.views_many(prompts, BATCH)

    def kept(readings: list[list[Reading]]) -> list[list[Reading]]:
        return [r for r in readings if not mentions(r[0].prompt, concept)]

    coco_fit, coco_held = kept(guard.general("fit", coco)), kept(guard.general("held", coco))
    others_fit, others_held = read(others[::2]), read(others[1::2] or others)
    threshold = max(_threshold([score(r) for r in coco_fit], coco_limit / 2),
                    _threshold([score(r) for r in others_fit], others_limit / 2))

    def rate(readings: list[list[Reading]]) -> float:
        hits = [guard.scores(r, prototypes, concept)[0] >= threshold for r in readings]
        return round(sum(hits) / max(len(hits), 1), 4)

    attacks = {kind: rate(read([p[:a] + s + p[b:] for p in held for a, b in concept_spans(p, concept)[:1]
                                for s in spelt])) for kind, spelt in attack_spellings(concept).items()}
    calibration = Calibration(round(threshold, 6), rate(read(held)), attacks,
                              {"coco": rate(coco_held), "others": rate(others_held)},
                              {"coco": coco_limit, "others": others_limit}, min_detection,
                              {"prototypes": int(prototypes.shape[0]), "held_out": {
                                  "positives": len(held), "coco": len(coco_held), "others": len(others_held)}})
    return calibration, prototypes
