"""The methods the quality harness compares, each inside the stream-disentangled framework (§5.1: every
fine-tuning baseline trains a text-gated LoRA on the caption rows of the main layers' Q/K/V, Eq. 4), and
the training recipes they share. Used by benchmarks/quality.py and benchmarks/_table4.py.

- Z-Erase: the paper's erasure as the service trains it (L_erase + L_attn + λ L_pr, the Lagrangian λ of
  Eq. 13-15), preserving the preset and what the service adds for what nobody named (unnamed_prior, issue 24);
- Z-Erase, null-space: the same, its ΔW constrained off the preserved prompts'
  caption-row directions (zerase.train.null_space, `null_space = presets.NULL_SPACE`);
- Z-Erase, preset alone: the same preserving only the category preset (the service before issue 24);
- Z-Erase, concept-differential: the erase target is the frozen output of the same prompt without the concept
  (AC_TARGET's anchors) instead of Eq. 5's push away from the unconditional output, so only what the concept adds
  is removed (issue 24), with Z-Erase's attention term and λ;
- Z-Erase, level λ: the same with λ the dual variable of a constraint on the level of L_pr (issue 15);
- Z-Erase, fixed λ=1: no modulation (Table 5's "L_erase + L_attn + L_pr");
- Z-Erase, on-policy: the erase bank re-sampled with the current LoRA every 50 steps (issue 15);
- Z-Erase, null-space, on-policy: both of the above;
- Z-Erase, null-space 0.999: the constraint off 99.9 % of the preserved rows' energy instead of 99 % (a shape's
  erasure at 0.99 damaged the character drawn with that shape: square -> Zed); with on-policy banks on request
  (--methods; measured on Zed alone, behind the 0.99 pair);
- Z-Erase, prompt pool: 64 base prompts (the world's captions of the concept, a quarter category templates)
  × 8 surface variants (word order, respellings), 64 trajectories, on-policy every 50 steps;
- ESD-u: Eq. 5's negative-guidance target alone (no attention term, no preservation) on every main layer's
  caption-row Q/K/V. ESD-u trains the non-cross-attention weights of a U-Net; a single-stream model has
  no cross-attention to leave out, so in the framework ESD-u is the whole trainable set under L_erase;
- AC (model-based, Kumari et al.): the frozen model's output for the anchor concept in the prompt's own
  context (AC_TARGET per axis: "a red circle" -> "a circle" for a colour, -> "a red shape" for a shape,
  "a picture of Mira" -> "a picture of a character"), with AC's regulariser as L_pr at a fixed weight 1;
- UCE: the closed-form edit of the caption rows' projections (zerase.baselines.uce), anchors as AC's;
- naive fine-tuning: L_erase alone on an *ungated* LoRA (image rows too): the paper's Fig. 3 (right);
- token zeroing: the concept's key columns masked at inference (Fig. 3 left).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zerase.evaluate.strength import StrengthSearch, search_strength
from zerase.model.pipeline import load_pipeline
from zerase.model.profiles import profile_for
from zerase.patch.apply import PatchedPipeline, stack_factors
from zerase.patch.artifact import LoraArtifact, load_artifact, write_artifact
from zerase.patch.lora import GatedLoraModel, LoraSpec
from zerase.serve.routing import routed_for
from zerase.serve.served_patch import served_patch
from zerase.train.config import EraseConfig
from zerase.train.presets import NULL_SPACE, NULL_SPACE_TIGHT, resolve
from zerase.world.profile import AXIS_CATEGORY, world_axis, world_erase_contexts

# AC's anchor concept per axis: the concept stripped, or replaced by its superclass' word.
AC_TARGET: dict[str, dict[str, Any]] = {
    "colour": {"target": "strip"}, "style": {"target": "strip"},
    "shape": {"target": "replace", "anchor": "shape"}, "character": {"target": "replace", "anchor": "a character"},
}


# The training fit the paper uses, which a category's defaults may change (styles' fit and respelt prompt pool since
# 2026-12-07).
# (A pool's bases, `erase_contexts`, are not pinned: a method that asks for a pool gets the world's, below.)
PAPER_FIT = {f.name: f.default for f in dataclasses.fields(EraseConfig)
             if f.name in ("steps", "rank", "lr", "attn_weight", "anchor_paths", "prompt_pool", "pool_variants",
                           "perturb", "pool_templates")}


@dataclass(frozen=True)
class Method:
    # "train" (zerase.train.erasure), "uce" (zerase.baselines.uce) or "zeroing" (zerase.baselines.zeroing, nothing
    # trained)
    kind: str
    overrides: dict[str, Any] = field(default_factory=dict)
    per_axis: dict[str, dict[str, Any]] = field(default_factory=dict)  # more overrides, by the concept's axis
    request: dict[str, Any] = field(default_factory=dict)  # how the request is resolved (zerase.train.presets.resolve)
    defaults: bool = False  # the service's defaults as they are today (category settings, the model's anchors)
    strength: bool = False  # served at the strength a job's search picks (zerase.evaluate.strength)
    # Trained at its category's fit as it is today (presets.CATEGORY_SETTINGS: a style's 400 steps at rank 8 and its
    # respelt pool since 2026-12-07); False: at the paper's fit (EraseConfig's defaults, PAPER_FIT), as the method's
    # committed cells were measured.
    style_fit: bool = False
    # How the cell serves it: "raw", every prompt gets the erasure (the table's other rows); "routed", one erasure
    # routed without its fallback: the prompts the router reads naming the concept get it, the rest the base model
    # (zerase.serve.routing); "as served", exactly as /generate serves it deployed alone and as its job is judged:
    # routed, every other prompt getting its consolidated patch (zerase.serve.served_patch).
    served: str = "raw"


METHODS: dict[str, Method] = {
    "Z-Erase": Method("train"),
    "Z-Erase, null-space": Method("train", {"null_space": NULL_SPACE}),
    "Z-Erase, preset alone": Method("train", request={"protect_unnamed": False}),
    "Z-Erase, concept-differential": Method("train", {}, AC_TARGET),
    "Z-Erase, level λ": Method("train", {"modulation": "level"}),
    "Z-Erase, fixed λ=1": Method("train", {"modulation": "fixed", "fixed_lambda": 1.0}),
    "Z-Erase, on-policy": Method("train", {"refresh_every": 50}),
    "Z-Erase, null-space, on-policy": Method("train", {"null_space": NULL_SPACE, "refresh_every": 50}),
    "Z-Erase, null-space 0.999": Method("train", {"null_space": NULL_SPACE_TIGHT}),
    "Z-Erase, null-space 0.999, on-policy": Method("train", {"null_space": NULL_SPACE_TIGHT, "refresh_every": 50}),
    # What a request for the concept trains with today: the category's settings and the world's anchors (a
    # character its plain look, a shape or style its axis's next value in the prompt's context).
    "Z-Erase, defaults": Method("train", defaults=True),
    "Z-Erase, defaults, routed": Method("train", defaults=True, served="routed"),
    "Z-Erase, served strength": Method("train", defaults=True, strength=True, served="routed"),
    # Served routed, an erasure touches only the prompts naming its concept: does it still need the constraint that
    # protects everything else when patched everywhere, or would a stronger fit need less strength (and smear less)?
    "Z-Erase, served strength, unconstrained": Method("train", {"null_space": 0.0}, defaults=True, strength=True,
                                                      served="routed"),
    # The shapes' and styles' category defaults until 2026-12-06 (the 3-seed table's picks, every prompt patched).
    "Z-Erase, served strength, constrained": Method("train", defaults=True, strength=True, served="routed",
                                                    per_axis={"shape": {"null_space": NULL_SPACE_TIGHT},
                                                              "style": {"null_space": NULL_SPACE}}),
    "Z-Erase, served strength, lr 2e-3": Method("train", {"lr": 2e-3}, defaults=True, strength=True, served="routed"),
    "Z-Erase, served strength, 400 steps": Method("train", {"steps": 400}, defaults=True, strength=True,
                                                  served="routed"),
    # Today's defaults judged on the very patch /generate serves for the erasure deployed alone (fallback included).
    # Its colour cells since 2026-12-07 erase towards the next colour (zerase.world.profile.sibling): they ran as
    # "Z-Erase, as served, colour to the next colour" (colour: target "replace", the sibling as anchor) before that
    # became the default, the same configuration; the Eq. 5 ones are in the sweep's before-colour-anchor/.
    # Its style cells since 2026-12-07 train at the styles' fuller fit; the ones before are in before-style-paths/.
    # Its shape and style cells since 2026-12-07 (tenth) are served at the strength the attack-aware search picks
    # (zerase.evaluate.strength), its styles trained on the respelt pool; the ones before are in before-respelt-pool/.
    # Its shape cells ran as "Z-Erase, as served, fixed prompts" (the same configuration once shapes kept the fixed
    # prompts); those trained on the pool are in shapes-respelt-pool/.
    "Z-Erase, as served": Method("train", defaults=True, strength=True, served="as served", style_fit=True),
    # The same on the paper's fixed erase prompts: what the respelt pool changes, at today's strength search.
    "Z-Erase, as served, fixed prompts": Method("train", {"prompt_pool": 0}, defaults=True, strength=True,
                                                served="as served", style_fit=True),
    # A style's fit at 1x (outlined 0.48 of its calibration shots, filled 0.45) is what the search amplifies;
    # unconstrained with 300 steps it starts at 0.17 and 0.28.
    "Z-Erase, as served, unconstrained, 300 steps": Method("train", {"null_space": 0.0, "steps": 300}, defaults=True,
                                                           strength=True, served="as served"),
    "Z-Erase, prompt pool": Method("train", {"prompt_pool": 64, "pool_templates": 0.25, "trajectories": 64,
                                             "refresh_every": 50}),
    "ESD-u": Method("train", {"target": "esd", "attn_weight": 0.0, "modulation": "none"}),
    "AC": Method("train", {"attn_weight": 0.0, "modulation": "fixed", "fixed_lambda": 1.0}, AC_TARGET),
    "UCE": Method("uce", {}, AC_TARGET),
    "naive fine-tuning": Method("train", {"gating": "all", "attn_weight": 0.0, "modulation": "none"}),
    "token zeroing": Method("zeroing"),
    # Table 5's ablations, on request (--methods)
    "L_erase + L_attn": Method("train", {"modulation": "none"}),
    "naive LoRA, Z-Erase losses": Method("train", {"gating": "all"}),
}
DEFAULT_METHODS = ("Z-Erase", "Z-Erase, null-space", "Z-Erase, preset alone", "Z-Erase, concept-differential",
                   "Z-Erase, level λ", "Z-Erase, fixed λ=1", "Z-Erase, on-policy", "Z-Erase, null-space, on-policy",
                   "Z-Erase, null-space 0.999",
                   "Z-Erase, prompt pool", "ESD-u", "AC", "UCE", "naive fine-tuning", "token zeroing")
REFERENCE = "Z-Erase"

# Training data shared by every trained method (and UCE's prompts), --recipe: the paper's fixed prompts and frozen
# bank (the default: baselines as the paper runs them), on-policy banks, or the resampled pool as well.
RECIPES: dict[str, dict[str, Any]] = {
    "paper": {},
    "on-policy": {"refresh_every": 50},
    "pool": {"prompt_pool": 64, "pool_templates": 0.25, "trajectories": 64, "refresh_every": 50},
}


def world_stack():  # noqa: ANN201 (pipeline, profile, sampling, evaluator)
    """The bundled world's pipeline, profile, sampling and probe evaluator."""
    pipe = load_pipeline()
    profile = profile_for()
    evaluator = profile.evaluator()
    if evaluator is None:
        raise SystemExit("the bundled model has no concept probe: run `zerase world build` first")
    return pipe, profile, profile.sampling, evaluator


def method_config(name: str, concept: str, settings, *, recipe: dict[str, Any], steps: int | None,
                  seed: int, extra: dict[str, Any] | None = None) -> EraseConfig:
    """The EraseConfig a method trains (or edits) with on one concept of the world: the service's presets,
    the shared recipe, then the method's own settings."""
    axis = world_axis(concept) or "colour"
    category = AXIS_CATEGORY[axis]
    method = METHODS[name]
    base = resolve(concept, category, sample_steps=settings.steps, guidance_scale=settings.guidance_scale,
                   height=settings.height, width=settings.width, **({"steps": steps} if steps else {}),
                   **method.request)
    # Every method as its committed cells measured it, before the category defaults (presets.CATEGORY_SETTINGS) and
    # the world's anchors (2026-12-06: characters to "a character", the rest by Eq. 5), unless it names those settings.
    paper = {"null_space": 0.0, "refresh_every": 0} | (
        {"target": "anchor", "anchor": "a character"} if axis == "character" else {"target": "esd", "anchor": None})
    fit = {} if method.style_fit else PAPER_FIT | ({"steps": steps} if steps else {})
    data = fit | (recipe if method.defaults else paper | recipe) | method.overrides | method.per_axis.get(axis, {}) \
        | (extra or {})
    if data.get("prompt_pool"):
        data = {"category": category, "erase_contexts": world_erase_contexts(concept)} | data
    return dataclasses.replace(base, **data, seed=seed)


def strengthen_as_a_job_does(pipe, path: Path, evaluator, settings, concept: str) -> StrengthSearch:
    """The trained artifact at `path` rewritten at the strength a job's search picks for it (before it is judged)."""
    trained = load_artifact(path, pipe)
    found = search_strength(pipe, trained, evaluator, settings, category=AXIS_CATEGORY[world_axis(concept) or "colour"])
    write_artifact(trained.at_strength(found.strength), path)
    return found


def install_artifact(pipe, path: Path) -> Callable[[], Callable[[], None]]:
    """An intervention (install -> remover) serving the artifact at `path`: gated through the service's
    patcher; an ungated (naive) one on every row."""
    artifact = load_artifact(path)

    def install() -> Callable[[], None]:
        if artifact.metadata["gating"] == "text-only":
            patched = PatchedPipeline(pipe)
            patched.apply([artifact])
            return patched.clear
        # The naive baseline cannot be served through the gated patcher: apply ΔW to every row.
        model = GatedLoraModel(pipe.transformer, _spec(artifact), text_only=False)
        model.set_factors(stack_factors([artifact], [1.0]))
        return model.remove

    return install


def install_routed(pipe, path: Path, concept: str, *, fallback: bool = False) -> Callable[[], Callable[[], None]]:
    """An intervention serving the artifact at `path` routed, alone: `fallback`, with its consolidated patch for the
    prompts the router does not send it (what /generate serves, made here as the job makes it); else without."""
    artifact = load_artifact(path)
    profile = profile_for()
    rest = served_patch(pipe, [artifact], profile, "routed") if fallback else None
    routed, _ = routed_for(pipe, profile, [artifact], rest, categories=[AXIS_CATEGORY[world_axis(concept) or "colour"]])

    def install() -> Callable[[], None]:
        patched = PatchedPipeline(pipe)
        patched.serve(routed)
        return patched.clear

    return install


def _spec(artifact: LoraArtifact) -> LoraSpec:
    return LoraSpec(tuple(artifact.metadata["target_modules"]), tuple(artifact.metadata["layers"]))
