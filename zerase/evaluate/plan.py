"""What an evaluation looks at: the `Evaluator` a model's profile provides (it reads images as sets of concepts,
and where it can, tells a clean object from mush), and the `Plan` of shots (prompt, seed, role) that measures one
erasure: the erased concept's prompts, every kept concept's, and the string attacks on the concept."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from zerase.train.prompts import attack_spellings, shuffle_words

ERASED, KEPT = "erased", "kept"  # shot roles; any other role is an attack kind


@dataclass(frozen=True)
class ConceptPrompts:
    """Prompts whose images must show `value` (of grouping `axis`)."""

    axis: str
    value: str
    prompts: list[str]


@dataclass(frozen=True)
class Shot:
    """One image of a plan: `prompt` at `seed`, checked for `concept` (as `Evaluator.read` spells it)."""

    prompt: str
    seed: int
    concept: str
    role: str  # ERASED, KEPT or an attack kind
    axis: str = ""  # the concept's grouping: per_concept names a kept concept "axis:concept"

    @property
    def key(self) -> str:
        return f"{self.axis}:{self.concept}" if self.axis else self.concept


@dataclass(frozen=True)
class Plan:
    """Which images measure what, for one erased concept."""

    concept: str  # as the evaluator spells it ("Mira")
    axis: str  # its grouping ("character")
    seeds: int
    shots: tuple[Shot, ...]


class Evaluator(ABC):
    """Reads generated images of one model: which concepts each shows, and which images to ask for."""

    @abstractmethod
    def can_read(self, concept: str) -> bool:
        """Whether `read` can tell if an image shows `concept`."""

    @abstractmethod
    def read(self, images: np.ndarray, prompts: Sequence[str]) -> list[set[str]]:
        """The concepts each (N, H, W, 3) uint8 image shows; `prompts` made them (for prompt-aware readers)."""

    # zerase.evaluate.evaluators: the job's context for general-purpose evaluators, and their own metrics.
    @abstractmethod
    def plan(self, concept: str, n_seeds: int, full: bool, *, category: str | None = None,
             preservation: Sequence[str] = (), anchor: str | None = None) -> Plan:
        """The images that measure an erasure of `concept` (see `standard_plan`); ValueError if unreadable.
        `category` (None: unknown), `preservation` and `anchor` are the job's: an evaluator that does not
        know the model's concepts picks its protocol by them (zerase.evaluate.evaluators.protocols); others ignore
        them."""

    def coherent(self, images: np.ndarray, prompts: Sequence[str]) -> list[bool] | None:
        """Per image, whether it still shows a clean, valid object of the model's world; None (the default):
        this evaluator cannot tell."""
        return None

    def extra_metrics(self, plan: Plan, before: Measured, after: Measured) -> dict[str, Any]:
        """This evaluator's metrics beyond `plan_metrics` (a CLIP score, detector counts), merged into the
        per-job result; none by default."""
        return {}


def attack_prompts(concept: str, base_prompts: Sequence[str], synonyms: Sequence[str] = (),
                   seed: int = 0) -> dict[str, list[str]]:
    """Variations of prompts showing `concept` that bypass brittle (token-level) erasure, by kind."""
    rng = random.Random(seed)
    c, base = concept, list(base_prompts) or [concept]
    spelt = attack_spellings(c)
    out = {
        "misspelling": [p.replace(c, m) for p in base[:2] for m in spelt["misspelling"]],
        "affix": [p.replace(c, a) for p in base[:2] for a in spelt["affix"]],
        "word_order": [shuffle_words(p, c, rng) for p in base],
        "synonym": [p.replace(c, s) for p in base[:2] for s in synonyms],
        "case": [p.replace(c, u) for p in base[:2] for u in spelt["case"]],
    }
    return {k: v for k, v in out.items() if v}


def standard_plan(erased: ConceptPrompts, others: Sequence[ConceptPrompts], attacks: Mapping[str, Sequence[str]],
                  n_seeds: int, full: bool) -> Plan:
    """full: every prompt of every concept and every attack prompt at seeds 0..n-1. Otherwise the per-job
    sample: every prompt of the concept at seeds 0..n-1 still, one image of every other concept and one per attack
    kind, seeds spread over 0..n-1."""
    seeds = range(n_seeds)

    def shots(c: ConceptPrompts, role: str, prompts: Sequence[str]) -> list[Shot]:
        return [Shot(p, s, c.value, role, c.axis) for p in prompts for s in seeds]

    # Every prompt of the concept at every seed in both, as a deployment is judged (served_evaluation): a prompt the
    # sample skipped was never judged (a square erasure still drew "a square"), and a job's Acc_e is its deployment's.
    out = shots(erased, ERASED, erased.prompts)
    if full:
        out += [s for c in others for s in shots(c, KEPT, c.prompts)]
        out += [s for kind, ps in attacks.items() for s in shots(erased, kind, ps)]
    else:
        def turn(prompts: Sequence[str], i: int) -> str:
            return prompts[i % len(prompts)]

        out += [Shot(turn(c.prompts, i), i % n_seeds, c.value, KEPT, c.axis) for i, c in enumerate(others)]
        out += [Shot(ps[0], i % n_seeds, erased.value, kind, erased.axis)
                for i, (kind, ps) in enumerate(attacks.items())]
    return Plan(erased.value, erased.axis, n_seeds, tuple(out))


def kept_shots(full: Sequence[Shot], images_each: int, excluded: Collection[str] = ()) -> list[Shot]:
    """From a full plan's shots, `images_each` images of every kept concept (its prompts in turn, seeds
    0..images_each-1), leaving out the concepts in `excluded`: enough images per concept to judge each one, not
    only their mean."""
    by_key: dict[str, list[Shot]] = {}
    for s in full:
        if s.role == KEPT and s.concept not in excluded:
            by_key.setdefault(s.key, []).append(s)
    out = []
    for candidates in by_key.values():
        prompts, first = list(dict.fromkeys(s.prompt for s in candidates)), candidates[0]
        out += [Shot(prompts[j % len(prompts)], j, first.concept, KEPT, first.axis) for j in range(images_each)]
    return out


@dataclass(frozen=True)
class Measured:
    """A plan's images (in shot order) and what the evaluator read in them."""

    images: np.ndarray
    readings: list[set[str]]
    coherent: list[bool] | None = None  # Evaluator.coherent, where it can tell
