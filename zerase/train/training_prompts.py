"""An erasure's training prompts, encoded once: the erase prompts with their concept tokens and anchors,
the preservation prompts and the empty prompt.

The erase prompts are either the paper's: a few templates plus the model's own prompts, each also in
`shuffle_variants` word orders (§4.1), paired with the frozen bank's trajectories; or, with
`EraseConfig.prompt_pool > 0`, a pool (zerase.train.prompt_pool): base prompts, on which the bank samples its
trajectories, each with surface variants of which every step draws one afresh. Either way the concept's
token positions (Eq. 6) are found on the final prompt, respelt concept included.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
from diffusers import ZImagePipeline

from zerase.model.captions import MAX_CAPTION_TOKENS
from zerase.model.pipeline import encode_prompts
from zerase.train.config import EraseConfig
from zerase.train.prompt_pool import prompt_pool
from zerase.train.prompts import concept_token_positions, erase_prompts, replace_concept, shuffle_words, strip_concept


@dataclass
class TrainingPrompts:
    texts: list[str]  # erase prompts
    embeds: list[torch.Tensor]  # their caption features
    positions: torch.Tensor  # (V, N) concept token indices, padded with 0
    valid: torch.Tensor  # (V, N)
    anchors: list[torch.Tensor] | None  # per erase prompt: the anchor's features (None: target "esd")
    preserve: list[torch.Tensor]
    empty: torch.Tensor
    anchor_per_prompt: bool  # the anchor depends on the erase prompt ("strip", "replace"), not one fixed prompt
    # A pool's groups: per base prompt (the bank's prompt index), the indices of its surface variants, the base
    # first. None: the paper's prompts, each its own bank prompt.
    groups: list[list[int]] | None = None

    @property
    def bank_prompts(self) -> list[int]:
        """Index of each bank prompt (a base) among `texts`."""
        return [g[0] for g in self.groups] if self.groups is not None else list(range(len(self.texts)))


def _erase_texts(config: EraseConfig, rng: random.Random) -> tuple[list[str], list[str], list[int]]:
    """(erase prompts, the concept as each one spells it, the group of each: its base prompt's number)."""
    if config.prompt_pool:
        contexts = config.erase_contexts or erase_prompts(config.concept, config.erase_prompts)
        pool = prompt_pool(config.concept, config.prompt_pool, config.pool_variants, rng, category=config.category,
                           contexts=contexts, perturb=config.perturb, synonyms=config.synonyms,
                           templates=config.pool_templates)
        flat = [(p, g) for g, group in enumerate(pool) for p in group]
        return [p.text for p, _ in flat], [p.spelled for p, _ in flat], [g for _, g in flat]
    base = erase_prompts(config.concept, config.erase_prompts)
    variants = base + [shuffle_words(p, config.concept, rng) for p in base for _ in range(config.shuffle_variants)]
    variants = list(dict.fromkeys(variants))
    return variants, [config.concept] * len(variants), list(range(len(variants)))


def prepare_prompts(pipe: ZImagePipeline, config: EraseConfig, rng: random.Random) -> TrainingPrompts:
    variants, spelled, group_of = _erase_texts(config, rng)
    pos = [concept_token_positions(pipe.tokenizer, p, c) for p, c in zip(variants, spelled)]
    # The pipeline keeps the first MAX_CAPTION_TOKENS tokens: a variant whose concept lies past the cut
    # would train on a caption without it, and gather attention past the sequence's end.
    kept = [i for i, p in enumerate(pos) if all(t < MAX_CAPTION_TOKENS for t in p)]
    if not kept:
        raise ValueError(f"{config.concept!r} lies past the {MAX_CAPTION_TOKENS} caption tokens the pipeline "
                         "keeps in every training prompt")
    variants, spelled, pos = [variants[i] for i in kept], [spelled[i] for i in kept], [pos[i] for i in kept]
    groups: dict[int, list[int]] = {}
    for i, k in enumerate(kept):
        groups.setdefault(group_of[k], []).append(i)
    width = max(1, max(len(p) for p in pos))
    positions = torch.tensor([p + [0] * (width - len(p)) for p in pos])
    valid = torch.tensor([[1.0] * len(p) + [0.0] * (width - len(p)) for p in pos])
    anchor_texts: list[str] | None = None
    if config.target == "anchor":
        # (the paper's prompts: one copy per variant, as before; a pool: encoded once, shared)
        anchor_texts = [config.anchor or ""] * (1 if config.prompt_pool else len(variants))
    elif config.target == "strip":
        anchor_texts = [strip_concept(p, c) for p, c in zip(variants, spelled)]
    elif config.target == "replace":
        anchor_texts = [replace_concept(p, c, config.anchor or "") for p, c in zip(variants, spelled)]
    # Every prompt is encoded once, up front: the text encoder is not needed while training.
    texts = variants + list(config.preservation) + [""] + (anchor_texts or [])
    encoded = encode_prompts(pipe, texts)
    nv, npr = len(variants), len(config.preservation)
    anchors = encoded[nv + npr + 1:] if anchor_texts else None
    if anchors is not None and len(anchors) < nv:
        anchors = anchors * nv
    return TrainingPrompts(texts=variants, embeds=encoded[:nv], positions=positions, valid=valid, anchors=anchors,
                           preserve=encoded[nv:nv + npr], empty=encoded[nv + npr],
                           anchor_per_prompt=config.target in ("strip", "replace"),
                           groups=list(groups.values()) if config.prompt_pool else None)
