"""Token zeroing at inference (§3, Fig. 3 left): the concept's attention columns removed.

The baseline the paper shows to be effective yet brittle: locate the concept's tokens in the
prompt and mask them out as keys in every main layer, so no query attends to them. A misspelt
or rephrased prompt has no matching tokens, and nothing is removed.
"""

from __future__ import annotations

import torch
from diffusers import ZImagePipeline

from zerase.gating import TextSpanTracker
from zerase.prompts import concept_token_positions


class TokenZeroing:
    """While installed, prompts containing `concept` (exact text) have its key columns masked.

    Prompts are recognised by their token count (`prepare` them first): enough for a benchmark
    that runs one prompt per batch, not a product feature.
    """

    def __init__(self, pipe: ZImagePipeline, concept: str) -> None:
        self.pipe, self.concept = pipe, concept
        self.tracker = TextSpanTracker(pipe.transformer)
        self._positions: dict[int, list[int]] = {}  # caption length -> concept token indices
        self._handles = [layer.attention.register_forward_pre_hook(self._mask_keys, with_kwargs=True)
                         for layer in pipe.transformer.layers]

    def prepare(self, prompts: list[str]) -> None:
        """Record where the concept sits in each prompt (keyed by caption length, as the hook sees it)."""
        tokenizer = self.pipe.tokenizer
        for p in prompts:
            # Rendered, then tokenized as the pipeline does (transformers 5's tokenize=True gives a BatchEncoding,
            # whose len() is its number of keys, not of tokens).
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True, enable_thinking=True)
            n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
            positions = concept_token_positions(tokenizer, p, self.concept)
            if self._positions.setdefault(n, positions) != positions:
                raise ValueError(f"{p!r} has the caption length of another prepared prompt with the concept "
                                 "elsewhere; prepare and run such prompts separately")

    def _mask_keys(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        span = self.tracker.span
        hidden = args[0] if args else kwargs["hidden_states"]
        if span is None or span.uniform_image_len is None:
            return None
        mask = kwargs.get("attention_mask")
        mask = (torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device) if mask is None
                else mask.clone())
        for i, cap_len in enumerate(span.caption_lens):
            for pos in self._positions.get(cap_len, []):
                mask[i, span.uniform_image_len + pos] = False
        kwargs["attention_mask"] = mask
        return args, kwargs

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self.tracker.remove()
