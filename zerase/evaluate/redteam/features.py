"""Caption features as the attacks see them: the pipeline's own text-encoder output, per prompt and pooled."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers import ZImagePipeline

from zerase.model.pipeline import templated_caption


def templated_ids(pipe: ZImagePipeline, prompt: str) -> tuple[list[int], int, int]:
    """The caption's token ids as the pipeline builds them (chat template), and the [start, end) token range
    of the prompt's own text in them."""
    text = templated_caption(pipe, prompt)
    # The prompt starts where two different prompts' renderings part ("a" alone also occurs in the template).
    a, b = templated_caption(pipe, "A"), templated_caption(pipe, "B")
    at = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
    enc = pipe.tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    start = sum(1 for _, e in offsets if e <= at)
    end = start + sum(1 for s, e in offsets[start:] if e > s and s < at + len(prompt))
    return ids, start, end


def content_start(pipe: ZImagePipeline) -> int:
    """Template tokens before the prompt's text. The text encoder is causal, so their features are the same
    for every prompt: pooling leaves them out."""
    return templated_ids(pipe, "x")[1]


def pooled(features: Sequence[torch.Tensor], start: int) -> torch.Tensor:
    """(N, D) fp32: each caption's mean feature over its prompt text and the template's closing tokens.

    Mean-pooled rather than per token: Z-Image's captions have no fixed length (CLIP's 77 slots, on which
    Ring-A-Bell subtracts token by token, do not exist here), and a found prompt need not have the
    source prompt's token count. The closing tokens are kept: a causal encoder summarises the prompt there.
    """
    return torch.stack([f[start:].float().mean(0) for f in features])
