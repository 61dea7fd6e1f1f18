"""How the prompt guard reads a prompt: the pipeline's own text encoder (chat template and all, hidden layer -2
as ZImagePipeline uses it), its content tokens' features with their character offsets, pooled over every span of
up to MAX_SPAN tokens; read as written and lower-cased, and, for a one-word concept, with near-spellings of it
written as the concept (`zerase.train.prompts.respelt`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import torch
from diffusers import ZImagePipeline

from zerase.model.pipeline import templated_caption

MAX_SPAN = 4  # tokens pooled into one span: a name, a misspelt word split into pieces


BATCH = 64  # prompts per text-encoder pass when calibrating


@dataclass(frozen=True)
class Reading:
    """One prompt as the text encoder reads it: its content tokens' features and character offsets."""

    prompt: str
    features: torch.Tensor  # (T, D) fp32, the prompt's own tokens
    offsets: list[tuple[int, int]]  # per token, [start, end) in `prompt`

    @cached_property
    def _windows(self) -> tuple[torch.Tensor, list[tuple[int, int]], list[int]]:
        n = len(self.offsets)
        # A span starts where a word does: byte-level pieces inside a longer word ("ol|d|er") are not read as a
        # concept of their own (on the 24-character world "d er" of "older" read as "red" at 0.95).
        first = [i for i in range(n) if self._word_start(self.offsets[i][0])]
        starts = [i for i in first for j in range(i + 1, min(i + MAX_SPAN, n) + 1)]
        ends = [j for i in first for j in range(i + 1, min(i + MAX_SPAN, n) + 1)]
        if not starts:
            return torch.zeros(0, self.features.shape[-1]), [], []
        # Mean over tokens [i, j) from a running sum: one tensor op for every window.
        total = torch.cat([torch.zeros(1, self.features.shape[-1]), self.features.cumsum(0)])
        size = torch.tensor(ends) - torch.tensor(starts)
        feats = (total[ends] - total[starts]) / size[:, None]
        spans = [(self.offsets[i][0], self.offsets[j - 1][1]) for i, j in zip(starts, ends, strict=True)]
        return feats, spans, size.tolist()

    def _word_start(self, at: int) -> bool:
        return at == 0 or not self.prompt[at - 1].isalnum()

    def windows(self) -> tuple[torch.Tensor, list[tuple[int, int]], list[int]]:
        """Every span of 1..MAX_SPAN consecutive tokens: (W, D) pooled features, [start, end) characters and
        token counts (computed once per reading)."""
        return self._windows

    def covering(self, start: int, end: int) -> torch.Tensor | None:
        """The pooled feature of the tokens that spell characters [start, end) (at most MAX_SPAN of them)."""
        idx = [i for i, (s, e) in enumerate(self.offsets) if e > start and s < end][:MAX_SPAN]
        return self.features[idx].mean(0) if idx else None


class CaptionReader:
    """Reads prompts with a pipeline's tokenizer and text encoder, one prompt per forward pass: a prompt's
    features never depend on what else is read with it (batch-safe)."""

    def __init__(self, pipe: ZImagePipeline) -> None:
        self.pipe = pipe
        a, b = templated_caption(pipe, "A"), templated_caption(pipe, "B")
        self.at = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)  # where the prompt's text starts

    def views(self, prompt: str) -> list[Reading]:
        """The prompt as written and lower-cased (character for character, so offsets hold): "RED" is read as
        "red" is, since a moderator's takedown is not a matter of case."""
        return self.views_many([prompt], batch=2)[0]  # both views in one encoder pass

    def read(self, prompt: str) -> Reading:
        return self.read_many([prompt])[0]

    def views_many(self, prompts: Sequence[str], batch: int = 1) -> list[list[Reading]]:
        lowered = ["".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in p) for p in prompts]
        texts = list(dict.fromkeys([*prompts, *lowered]))
        read = dict(zip(texts, self.read_many(texts, batch), strict=True))
        return [[read[p]] + ([read[low]] if low != p else []) for p, low in zip(prompts, lowered, strict=True)]

    @torch.no_grad()
    def read_many(self, prompts: Sequence[str], batch: int = 1) -> list[Reading]:
        """Each prompt read; `batch` > 1 pads several into one pass (calibration's thousands of captions: the
        encoder is causal and masks the padding, so a real token's features change only by rounding)."""
        out: list[Reading] = []
        encoder = self.pipe.text_encoder
        for i in range(0, len(prompts), batch):
            chunk = list(prompts[i:i + batch])
            encs = [self.pipe.tokenizer(templated_caption(self.pipe, p), return_offsets_mapping=True,
                                        add_special_tokens=False) for p in chunk]
            length = max(len(e["input_ids"]) for e in encs)
            pad = self.pipe.tokenizer.pad_token_id or 0
            ids = torch.tensor([e["input_ids"] + [pad] * (length - len(e["input_ids"])) for e in encs])
            mask = torch.tensor([[1] * len(e["input_ids"]) + [0] * (length - len(e["input_ids"])) for e in encs])
            hidden = encoder(input_ids=ids.to(encoder.device), attention_mask=mask.to(encoder.device),
                             output_hidden_states=True).hidden_states[-2].float().cpu()
            out += [self._reading(p, e["offset_mapping"], h) for p, e, h in zip(chunk, encs, hidden, strict=True)]
        return out

    def _reading(self, prompt: str, offsets: Sequence[tuple[int, int]], hidden: torch.Tensor) -> Reading:
        end = self.at + len(prompt)
        keep = [(i, max(s, self.at) - self.at, min(e, end) - self.at)
                for i, (s, e) in enumerate(offsets) if e > s and s < end and e > self.at]
        # A byte-level BPE token carries its leading space (" red"): the span named starts at the word.
        keep = [(i, s + len(prompt[s:e]) - len(prompt[s:e].lstrip()), e) for i, s, e in keep]
        return Reading(prompt, hidden[[i for i, _, _ in keep]], [(s, e) for _, s, e in keep])
