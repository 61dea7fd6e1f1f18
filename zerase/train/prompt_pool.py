"""Resampled erase prompts: the concept in category templates over many contexts, reworded and respelt.

A fixed handful of training prompts teaches the LoRA those prompts; the evaluation and a red team use
others. With `EraseConfig.prompt_pool > 0` training draws from a pool made here in two layers:

- *bases* (what the prompt shows): `prompt_pool` of them, each one of the model's own prompts showing the
  concept (`EraseConfig.erase_contexts`, e.g. the tiny world's object templates) or, with probability
  `templates` (`EraseConfig.pool_templates`), a category template (the paper's Table 7 kinds, "an art in
  the style of {c}", "a close scene of {c}", I2P-like phrasings for nudity) with one of ~30 scene contexts.
  The erase bank's trajectories are sampled from bases, so a state always comes from a prompt showing the
  same content, as in ESD: Eq. 5's target for "a yellow circle" at a red circle's state would also push
  away from "yellow";
- *surface variants* of each base (`pool_variants`, the base first): the paper's word-order shuffle (§4.1,
  probability 1/3) and, with probability `perturb`, the concept respelt: a misspelling, an affix, a change
  of case, or one of `EraseConfig.synonyms`. Every step draws a fresh variant of each state's base. The
  evaluation's own attack spellings (`prompts.attack_spellings`) are never drawn: attack success stays a
  measure of spellings the erasure did not train on.

The caller finds the concept's tokens on the final prompt (`prompts.concept_token_positions` with the
spelling returned), so Eq. 6 always suppresses the tokens that are really there.
"""

from __future__ import annotations

import random
import string
from collections.abc import Sequence
from dataclasses import dataclass

from zerase.train.prompts import GENERIC_TEMPLATES, attack_spellings, concept_spans, shuffle_words

CATEGORY_TEMPLATES: dict[str, tuple[str, ...]] = {  # Table 7's templates first, then rewordings
    "entity": ("a photo of {c}", "a picture of {c}", "a close-up of {c}", "a drawing of {c}", "{c} in a scene"),
    "artistic_style": ("an art in the style of {c}", "a painting in the style of {c}", "artwork by {c}",
                       "a landscape in the style of {c}", "a portrait in the style of {c}"),
    "abstraction": ("a close scene of {c}", "an image of {c}", "a scene full of {c}", "{c}", "a picture of {c}"),
    "celebrity": ("a photo of {c}", "a portrait of {c}", "{c} smiling", "{c} on stage", "a picture of {c}"),
    # I2P-like: the concept as a modifier of a person or scene, as I2P's prompts phrase it
    "nudity": ("a {c} woman", "a {c} man on a beach", "{c}, a photo of a person", "a painting of a {c} figure",
               "{c} portrait, photorealistic"),
    "violence": ("a scene of {c}", "{c} in the street", "a photo of {c}", "a painting of {c}", "{c}, dramatic"),
    "custom": GENERIC_TEMPLATES,
}
CONTEXTS: tuple[str, ...] = (
    "", "at night", "in a park", "on a table", "in the city", "at the beach", "in a forest", "in the snow",
    "studio lighting", "highly detailed", "4k", "oil painting", "watercolor", "digital art", "black and white",
    "soft light", "seen from above", "close-up", "wide angle", "in the rain", "on a white background",
    "cinematic", "pencil sketch", "in a room", "at sunset", "vintage photo", "3d render", "minimalist",
    "in the desert", "underwater",
)
PREFIXES = ("un", "neo", "ultra", "my", "pre", "re")
SUFFIXES = ("s", "y", "ness", "like", "esque", "er")
PERTURBATIONS = ("misspelling", "affix", "case", "synonym")


@dataclass(frozen=True)
class PoolPrompt:
    text: str
    spelled: str  # the concept as this prompt writes it (find its tokens with this)


def misspell(word: str, rng: random.Random) -> str:
    """One random edit (deletion, doubling, swap of neighbours, substitution) of a word's letters."""
    if len(word) < 2:
        return word + rng.choice(string.ascii_lowercase)
    i = rng.randrange(len(word))
    op = rng.choice(("delete", "double", "swap", "substitute"))
    if op == "delete":
        return word[:i] + word[i + 1:]
    if op == "double":
        return word[:i + 1] + word[i] + word[i + 1:]
    if op == "swap" and i < len(word) - 1:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    return word[:i] + rng.choice(string.ascii_lowercase) + word[i + 1:]


def respell(concept: str, kind: str, rng: random.Random, synonyms: Sequence[str] = ()) -> str:
    """`concept` respelt one way of `kind` (a multi-word concept: one of its words)."""
    if kind == "synonym":
        return rng.choice(list(synonyms)) if synonyms else concept
    if kind == "case":
        return rng.choice((concept.lower(), concept.title(), concept.swapcase(),
                           "".join(ch.upper() if rng.random() < 0.5 else ch.lower() for ch in concept)))
    words = concept.split(" ")
    k = rng.randrange(len(words))
    if kind == "misspelling":
        words[k] = misspell(words[k], rng)
    else:
        words[k] = rng.choice(PREFIXES) + words[k] if rng.random() < 0.5 else words[k] + rng.choice(SUFFIXES)
    return " ".join(words)


def base_prompt(concept: str, rng: random.Random, *, category: str | None, contexts: Sequence[str],
                templates: float = 0.5) -> str:
    """A prompt showing the concept: one of `contexts`, or (probability `templates`) a category template with
    a scene context."""
    if contexts and rng.random() >= templates:
        return rng.choice(list(contexts))
    text = rng.choice(CATEGORY_TEMPLATES.get(category or "custom", GENERIC_TEMPLATES)).format(c=concept)
    scene = rng.choice(CONTEXTS)
    return f"{text}, {scene}" if scene else text


def surface_variant(base: str, concept: str, rng: random.Random, *, perturb: float,
                    synonyms: Sequence[str] = ()) -> PoolPrompt:
    """`base` reworded (the word-order shuffle, probability 1/3) and with probability `perturb` respelt; the
    spelling is never one of the evaluation's attacks."""
    text = shuffle_words(base, concept, rng) if rng.random() < 1 / 3 else base
    spans = concept_spans(text, concept)
    if not spans or rng.random() >= perturb:
        return PoolPrompt(text, concept)
    held_out = {s for ss in attack_spellings(concept).values() for s in ss} | {concept}
    kinds = [k for k in PERTURBATIONS if k != "synonym" or synonyms]
    for _ in range(20):  # a short word has few edits: draw again until one is neither held out nor a no-op
        spelled = respell(concept, rng.choice(kinds), rng, synonyms)
        if spelled.strip() and spelled not in held_out:
            break
    else:
        return PoolPrompt(text, concept)
    for start, end in reversed(spans):
        text = text[:start] + spelled + text[end:]
    return PoolPrompt(text, spelled)


def prompt_pool(concept: str, size: int, variants: int, rng: random.Random, *, category: str | None,
                contexts: Sequence[str], perturb: float, synonyms: Sequence[str] = (),
                templates: float = 0.5) -> list[list[PoolPrompt]]:
    """Up to `size` distinct base prompts, each as a group of up to `variants` distinct surface forms, the
    base itself first."""
    bases: list[str] = []
    for _ in range(size * 8):
        b = base_prompt(concept, rng, category=category, contexts=contexts, templates=templates)
        if b not in bases and concept_spans(b, concept):
            bases.append(b)
        if len(bases) == size:
            break
    groups = []
    for b in bases:
        group = {b: PoolPrompt(b, concept)}
        for _ in range(variants * 4):
            if len(group) >= variants:
                break
            v = surface_variant(b, concept, rng, perturb=perturb, synonyms=synonyms)
            group.setdefault(v.text, v)
        groups.append(list(group.values()))
    return groups
