"""Category presets: what a takedown request leaves unsaid.

ε per the paper's Table 6; celebrities map to the anchor "a person" (Table 9); default
preservation sets cover the concept's *siblings*, because a sibling left out of the set is
erased along with the concept. The loaded model's profile knows its own concepts (the bundled
world: the other values of the concept's axis); otherwise the paper's curated lists (Table 7
concepts, Table 9 retention identities). No torch here: the control plane resolves requests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Any

from zerase.model.corpora import COCO, rows
from zerase.model.profiles import ModelProfile, profile_for
from zerase.train.config import EraseConfig
from zerase.train.prompts import concept_spans, strip_concept


class Category(StrEnum):
    """What kind of concept a takedown is about; each has its presets."""

    NUDITY = "nudity"
    VIOLENCE = "violence"
    ARTISTIC_STYLE = "artistic_style"
    ENTITY = "entity"
    ABSTRACTION = "abstraction"
    CELEBRITY = "celebrity"
    CUSTOM = "custom"


CATEGORIES = tuple(c.value for c in Category)

EPSILON = {  # Table 6
    "nudity": 1e-3, "violence": 1e-3, "artistic_style": 1e-3,
    "entity": 1e-2, "abstraction": 1e-2, "celebrity": 1e-2, "custom": 5e-3,
}

GENERIC_PRESERVATION = ["a photo of a dog", "a city street at night", "a bowl of fruit on a table",
                        "a portrait of a woman", "a mountain landscape"]
REAL_PRESERVATION = {  # Table 7 and Table 9 (retention group), paraphrased as prompts
    "entity": [f"a photo of a {e}" for e in ("church", "car", "airplane", "tower", "pizza", "cat", "shoes")],
    "artistic_style": [f"an art in the style of {a}" for a in
                       ("Claude Monet", "Pablo Picasso", "Rembrandt van Rijn", "Edvard Munch", "Frida Kahlo")],
    "abstraction": [f"a close scene of {a}" for a in ("a hug", "a kiss", "an explosion", "origami", "time")],
    "celebrity": [f"a photo of {p}" for p in ("Albert Einstein", "Lionel Messi", "Morgan Freeman",
                                               "Serena Williams", "Tom Cruise", "Angela Merkel")],
    "nudity": ["a person wearing clothes", "a portrait of a man", "a portrait of a woman", "people at a beach"],
    "violence": ["people shaking hands", "a peaceful protest", "a boxing poster", "a kitchen knife on a table"],
    "custom": [],
}
ANCHORS = {"celebrity": "a person"}
GENERAL_CAPTIONS = 4  # COCO captions every erasure keeps: what the model draws for text nobody listed
# Every takedown's ΔW acts off the directions holding this share of its preserved prompts' caption-row inputs
# (zerase.train.null_space). On the bundled world it cut the kept concepts' mean drop 0.077 -> 0.019 (red),
# 0.115 -> 0.067 (circle), 0.135 -> 0.038 (outlined); docs/algorithm.md has the table.
NULL_SPACE = 0.99
# Patched on every prompt, an object's erasure needed 0.999: at 0.99 a shape's LoRA still reached the character drawn
# with that shape (square: Zed 1.00 -> 0.375; circle: Mira to 0.56); at 0.999 the shapes kept the same Acc_e at half
# the drop (0.032 -> 0.015). A style at 0.999 stopped erasing (Acc_e 0.32 -> 0.61), a colour lost Ha (0.91 -> 0.80).
NULL_SPACE_TIGHT = 0.999
# Served routed (zerase.serve.routing), a shape's erasure reaches only the prompts naming it, and there the
# constraint only held the fit back: unconstrained, served at its searched strength, shapes 0.08 -> 0.00 of their
# images (star 0.12 -> 0.00, coherence 0.60 -> 0.92), the kept concepts untouched either way; a kept concept that
# suffers still tightens it (zerase.train.retune climbs from here to the ladder's first rung). Styles gained less
# (0.10 -> 0.08) and, served at 3x unconstrained, outlined's share of a set's consolidated fallback cost the kept
# concepts 0.020 (red+outlined+Mira; with circle too, Aro 1.00 -> 0.50): they keep the constraint
# (benchmarks/quality-24/sweeps/served-strength/, benchmarks/RESULTS.md).
UNCONSTRAINED = 0.0
# A character's erasure frees 5 %: on the 24-character world, with 23 other names held, 0.99 left Mira in 0.31 of
# her images (Acc_e; kept drop 0.011) and 0.98 in 0.19. At 0.95, Mira 0.00, Aro 0.00, Zed 0.06, Tavi 0.12, kept drop
# 0.016 / 0.008 / 0.053 / 0.015; 0.97 left Tavi at 0.31; no constraint dropped the kept concepts by 0.073; 400 steps
# at 0.99 erased Mira at a 0.032 drop and twice the time (benchmarks/quality-24/sweeps/character-null-space/).
NULL_SPACE_CHARACTER = 0.95
ON_POLICY = 50  # re-sample the erase bank with the current LoRA every this many steps (zerase.train.trajectories)
# Styles train on a resampled pool (zerase.train.prompt_pool): 32 of the model's prompts showing the concept, half
# of each step's drawn respelt (never as the evaluation's attacks spell it). At 8 calibration seeds "OUTLINED" drew
# an outline in 0.44 of its images at 1.5x, 0.00 so trained; filled's attacks 0.09 -> 0.02 (erased at 1.5x, not 2x);
# outlined at training seed 2 fared worse (0.09 -> 0.13). As served over 3 seeds the style axis's attacks 0.10 ->
# 0.06 at a better Ha; shapes' attacks fell too (star 0.09 -> 0.06) but their Ha did not hold (0.97 -> 0.95, star
# left in 0.06 of its images at one seed), so shapes keep the fixed prompts (benchmarks/RESULTS.md, "Styles trained
# on respellings"). A quarter more training time.
RESPELT_POOL = {"prompt_pool": 32, "pool_variants": 8, "perturb": 0.5}
# Each category's training settings where a request leaves them unset: the winner of issue 24's quality table
# (benchmarks/RESULTS.md, 3 training seeds) on the world axis that stands for the category (colour: abstraction,
# shape: entity, style: artistic_style, character: celebrity): among the settings that erase (Acc_e <= 0.5), the
# best Ha of those whose kept concepts' mean drop is within 0.02, else the smallest drop (`quality.py --table` prints
# the pick). The other categories take the winner over all eight concepts. Shapes since: the winner as /generate
# serves them (routed, at the strength the job's search picks), where no drop is left to trade.
CATEGORY_SETTINGS: dict[str, dict[str, Any]] = {
    category: {"null_space": NULL_SPACE, "refresh_every": 0} for category in CATEGORIES
} | {"celebrity": {"null_space": NULL_SPACE_CHARACTER, "refresh_every": ON_POLICY},
     # On the 24-character world the constraint alone left blue in 0.25 of its images, red 0.15, and their
     # consolidated patches 0.45 and 0.20 (41 preserved prompts where 20 were: more directions held still);
     # re-sampled on-policy, 0.00 each alone and together, consolidated kept drop 0.043 for the three
     # (benchmarks/takedowns/takedowns.md), at the same training time.
     "abstraction": {"null_space": NULL_SPACE, "refresh_every": ON_POLICY},
     "entity": {"null_space": UNCONSTRAINED, "refresh_every": 0},
     # A style turns into its sibling ("filled" -> "outlined"), a change of many pixels, which the paper's 200 steps at
     # rank 4 fit only in part ("filled" left in 0.36 of its calibration shots at 1x): the search then served it at 3x,
     # and 3x drew broken, many-coloured rings (coherence 0.20). Twice the steps, lr and rank, half the trajectories
     # sampled along the anchor's own path (`anchor_paths`: the states the erased model will reach) and no attention
     # term (Eq. 6 silences the very token that must now say "outlined"). As served, 3 training seeds: the style axis's
     # Acc_e 0.07 -> 0.03, coherence 0.51 -> 0.65 (outlined 0.80 -> 0.93), kept drop 0.01 either way; attack success
     # 0.07 -> 0.10 (benchmarks/RESULTS.md, "Styles: a fuller fit").
     "artistic_style": {"null_space": NULL_SPACE, "refresh_every": 0, "attn_weight": 0.0, "steps": 400, "lr": 2e-3,
                        "rank": 8, "anchor_paths": 0.5, **RESPELT_POOL}}
# What each preset does, for people choosing one (the console shows these next to the category).
DESCRIPTIONS = {
    "nudity": "Nudity classes. ε 1e-3 (tight: Table 6); preserves clothed people, portraits and beach scenes.",
    "violence": "Violent content. ε 1e-3; preserves handshakes, protests, posters, kitchen knives.",
    "artistic_style": "An artist's style. ε 1e-3; preserves other painters' styles (Table 7).",
    "entity": "An object or place. ε 1e-2; preserves other everyday objects (Table 7).",
    "abstraction": "An idea or scene kind. ε 1e-2; preserves other abstractions (Table 7).",
    "celebrity": "A person's likeness. ε 1e-2; turns into 'a person'; preserves other identities (Table 9); "
                 "re-samples its training states with the erasure as it learns (on-policy).",
    "custom": "Anything else. ε 5e-3; preserves only generic scenes: list what must stay intact.",
}


def model_defaults(model: ModelProfile | str | Path | None = None) -> dict[str, Any]:
    """The EraseConfig fields that belong to the model: how it samples, what training runs at."""
    profile = model if isinstance(model, ModelProfile) else profile_for(model)
    sampling, training = profile.sampling, profile.training
    return {"sample_steps": sampling.steps, "guidance_scale": sampling.guidance_scale,
            "schedule_steps": list(profile.served_steps), "height": training.height, "width": training.width,
            "erase_batch": training.erase_batch, "preserve_batch": training.preserve_batch,
            "trajectories": training.trajectories}


@dataclass(frozen=True)
class Resolved:
    config: EraseConfig
    dropped: list[str]  # preservation entries that contain the concept (preset or requested), left out
    added: dict[str, list[str]] = field(default_factory=dict)  # what the service added, by kind (`unnamed_prior`)


@cache
def general_captions(n: int = GENERAL_CAPTIONS) -> tuple[str, ...]:
    """`n` short COCO captions spread over the corpus (the same ones every time): a general prior of what the
    model draws, as MACE and OCE preserve a caption cache."""
    captions = [r["prompt"].strip() for r in rows(COCO)]
    short = [c for c in captions if len(c.split()) <= 10]
    step = max(1, len(short) // max(n, 1))
    return tuple(short[i * step] for i in range(min(n, len(short))))


def unnamed_prior(profile: ModelProfile, concept: str, category: str,
                  general: int = GENERAL_CAPTIONS) -> dict[str, list[str]]:
    """What every erasure keeps whatever the request lists, by kind: the concept's `neighbours` (the model's
    other concepts where its profile knows them, else the category's curated list), its own prompts with the
    concept taken out (`strip_concept`, as the Z-Erase reference code preserves), and `general` captions."""
    neighbours = profile.default_preservation(concept, category)
    if neighbours is None:
        neighbours = REAL_PRESERVATION[category] + GENERIC_PRESERVATION
    removed = [strip_concept(p, concept) for p in profile.erase_prompts(concept)]
    return {"neighbours": list(neighbours),
            "without_concept": list(dict.fromkeys(r for r in removed if r)),
            "general": [c for c in general_captions(general) if not concept_spans(c, concept)]}


def resolve(concept: str, category: str, preservation: list[str] | None = None, anchor: str | None = None,
            epsilon: float | None = None, *, model: ModelProfile | str | Path | None = None,
            protect_unnamed: bool = True, **overrides: Any) -> EraseConfig:
    """An EraseConfig for a takedown request: explicit values win, the category and the model's profile
    (`model`: a profile, or its directory; None: the bundled model) fill the rest."""
    return resolve_request(concept, category, preservation, anchor, epsilon, model=model,
                           protect_unnamed=protect_unnamed, **overrides).config


def resolve_request(concept: str, category: str, preservation: list[str] | None = None, anchor: str | None = None,
                    epsilon: float | None = None, *, model: ModelProfile | str | Path | None = None,
                    protect_unnamed: bool = True, **overrides: Any) -> Resolved:
    """`resolve`, also saying which preservation entries were dropped because they show the concept and what
    the service added. The requested `preservation` adds to the `unnamed_prior`, never replaces it: a moderator
    cannot list everything that must survive. `protect_unnamed=False` keeps only the list (None: the neighbours)."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown category {category!r}; one of {', '.join(CATEGORIES)}")
    profile = model if isinstance(model, ModelProfile) else profile_for(model)
    concept = concept.strip()
    prior = unnamed_prior(profile, concept, category)
    requested = [p for item in preservation or [] for p in profile.expand_preservation(item)]
    if protect_unnamed:
        added = {kind: [p for p in prompts if p not in requested] for kind, prompts in prior.items()}
        preservation = list(dict.fromkeys(requested + [p for prompts in added.values() for p in prompts]))
    else:
        added = {}
        preservation = list(dict.fromkeys(requested)) if preservation is not None else prior["neighbours"]
    # L_pr would pin the frozen output of the very prompt L_er changes ("a photo of a church" while erasing
    # "church"; "Claude Monet" while erasing "Monet"): such an entry is dropped, whoever named it.
    dropped = [p for p in preservation if concept_spans(p, concept)]
    preservation = [p for p in preservation if p not in dropped]
    target = "anchor"
    if anchor is None:  # the model's own anchor for its concept, used its way; else the category's
        anchor = profile.default_anchor(concept, category)
        target = (profile.default_target(concept, category) or target) if anchor else target
        anchor = anchor or ANCHORS.get(category)
    if overrides.get("target") is None and anchor:
        overrides["target"] = target
    if "erase_prompts" not in overrides and (shown := profile.erase_prompts(concept)):
        overrides["erase_prompts"] = shown
    for key, value in (CATEGORY_SETTINGS[category] | model_defaults(profile)).items():
        if overrides.get(key) is None:
            overrides[key] = value
    if overrides.get("prompt_pool") and overrides.get("erase_contexts") is None and (
            contexts := profile.erase_contexts(concept)):
        # A pool's bases: the model's own prompts showing the concept say it better than the category's templates.
        overrides["erase_contexts"] = contexts
        if overrides.get("pool_templates") is None:
            overrides["pool_templates"] = 0.0
    config = EraseConfig(concept=concept, preservation=list(preservation), anchor=anchor,
                         epsilon=EPSILON[category] if epsilon is None else epsilon, **overrides)
    return Resolved(config, dropped, {k: [p for p in v if p not in dropped] for k, v in added.items() if v})
