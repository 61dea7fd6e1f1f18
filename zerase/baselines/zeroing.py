"""Token zeroing at inference (§3, Fig. 3 left): the concept's attention columns removed.

The baseline the paper shows to be effective yet brittle: locate the concept's tokens in the
prompt and mask them out as keys in every main layer, so no query attends to them. A misspelt
or rephrased prompt has no matching tokens, and nothing is removed.
"""

from __future__ import annotations

import torch
from diffusers import ZImagePipeline

from zerase.model.pipeline import encode_prompts
from zerase.patch.gating import TextSpanTracker
from zerase.train.prompts import concept_token_positions


class TokenZeroing:
    """While installed, prompts containing `concept` (exact text) have its key columns masked.

    Prompts are recognised by their caption length (`prepare` them first) and, where several prepared
    prompts share a length, by the nearest caption features among them: enough for a benchmark, not a
    product feature. (A single prompt of a length matches whatever features come at that length, so an
    attack that optimises a prepared prompt's features keeps its concept columns masked.)
    """

    def __init__(self, pipe: ZImagePipeline, concept: str) -> None:
        self.pipe, self.concept = pipe, concept
        self.tracker = TextSpanTracker(pipe.transformer)
        self._positions: dict[str, list[int]] = {}  # prepared prompt -> concept token indices
        self._by_length: dict[int, list[tuple[torch.Tensor, list[int]]]] = {}  # caption length -> (features, idx)
        self._current: list[list[int]] = []  # per sample of this forward pass: the positions to mask
        self._handles = [pipe.transformer.register_forward_pre_hook(self._match, with_kwargs=True)]
        self._handles += [layer.attention.register_forward_pre_hook(self._mask_keys, with_kwargs=True)
                          for layer in pipe.transformer.layers]

    def prepare(self, prompts: list[str]) -> None:
        """Record where the concept sits in each prompt, by caption length and features (as the hooks see them)."""
        new = [p for p in dict.fromkeys(prompts) if p not in self._positions]
        if not new:
            return
        for p, features in zip(new, encode_prompts(self.pipe, new)):
            positions = concept_token_positions(self.pipe.tokenizer, p, self.concept)
            self._positions[p] = positions
            self._by_length.setdefault(len(features), []).append((features.detach().float().cpu(), positions))

    def _match(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        caps = args[2] if len(args) > 2 else kwargs["cap_feats"]
        self._current = []
        for c in caps:
            found = self._by_length.get(len(c), [])
            if len(found) > 1:
                c32 = c.detach().float().cpu()
                found = [min(found, key=lambda f: float((f[0] - c32).abs().max()))]
            self._current.append(found[0][1] if found else [])

    def _mask_keys(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        span = self.tracker.span
        hidden = args[0] if args else kwargs["hidden_states"]
        if span is None or span.uniform_image_len is None:
            return None
        mask = kwargs.get("attention_mask")
        mask = (torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device) if mask is None
                else mask.clone())
        for i, positions in enumerate(self._current):
            for pos in positions:
                mask[i, span.uniform_image_len + pos] = False
        kwargs["attention_mask"] = mask
        return args, kwargs

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self.tracker.remove()
