"""A prompt guard: a takedown live in seconds, while its erasure trains (the first stage of a mitigation).

It works on what the model reads, not on spelling. A prompt is read by the pipeline's own text encoder
(zerase.serve.caption_reading); every span of up to MAX_SPAN of the prompt's tokens is pooled into one feature,
centred on the mean feature of general captions (a large encoder's features share one big common direction) and
compared, by cosine, with the concept's *prototypes*: its own tokens' features in prompts that show it, respelt as
training respells (zerase.train.prompt_pool; the evaluation's attack spellings are left out, so they test it). A
prompt trips the guard when a span comes within the concept's threshold.

The threshold is calibrated per concept on negatives, the way its false positives are promised: COCO captions and
the model's other concepts, each with a limit on the share it may trip (zerase.serve.guard_calibration). Calibration
and the check the service applies before admitting a guard entry (`Calibration.passes`) are measured on prompts it
was not fitted on. Like Latent Guard (ECCV 2024) it is a filter in front of the model, brittle to an attacker who
optimises against it: the trained erasure follows it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from diffusers import ZImagePipeline

from zerase.model.corpora import coco_captions
from zerase.serve.caption_reading import BATCH, CaptionReader, Reading
from zerase.train.prompts import concept_spans, respelt

SPAN_SLACK = 0.05  # cosine a narrower span may lose and still be the one named
REFUSE, ANCHOR = "refuse", "anchor"  # what a tripped prompt gets: a 422, or the span replaced by the anchor


@dataclass(frozen=True)
class Trip:
    """Where a prompt came within a guarded concept's threshold."""

    key: str  # the guard entry (the takedown's erasure id)
    concept: str
    score: float
    start: int  # characters of the prompt, widened to whole words
    end: int


@dataclass
class GuardedConcept:
    key: str
    concept: str
    anchor: str | None
    threshold: float
    prototypes: torch.Tensor  # (P, D), centred, unit norm


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _whole_words(prompt: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and prompt[start - 1].isalnum():
        start -= 1
    while end < len(prompt) and prompt[end].isalnum():
        end += 1
    return start, end


class PromptGuard:
    """The concepts under guard and the reader that checks prompts against them."""

    def __init__(self, reader: CaptionReader, background: torch.Tensor) -> None:
        self.reader, self.background = reader, background
        self.concepts: list[GuardedConcept] = []
        self._general: dict[str, list[list[Reading]]] = {}  # COCO captions read once: "fit" and "held"
        self._stack: tuple[tuple[int, ...], torch.Tensor, torch.Tensor] | None = None

    @classmethod
    def for_pipeline(cls, pipe: ZImagePipeline, general: Sequence[str] | None = None) -> PromptGuard:
        """A guard on `pipe`'s text encoder, centred on the mean span feature of `general` captions."""
        reader = CaptionReader(pipe)
        general = list(general) if general is not None else coco_captions(64, offset=7)
        feats = torch.cat([reader.read(p).windows()[0] for p in general])
        return cls(reader, feats.mean(0))

    def general(self, part: str, n: int) -> list[list[Reading]]:
        """`n` COCO captions read once per guard (a process's first calibration pays for it): "fit" to set
        thresholds on, "held" to check them on."""
        if len(self._general.get(part, ())) < n:
            captions = coco_captions(n, offset={"fit": 0, "held": 3}[part])
            self._general[part] = self.reader.views_many(captions, BATCH)
        return self._general[part][:n]

    def prototypes(self, positives: Sequence[tuple[str, str]]) -> torch.Tensor:
        """The features of the concept's own tokens in each positive prompt, in every view (centred, unit
        norm)."""
        protos = []
        read = self.reader.views_many([p for p, _ in positives], BATCH)
        for (prompt, spelled), readings in zip(positives, read, strict=True):
            for reading in readings:
                protos += [f for s, e in concept_spans(prompt, spelled) if (f := reading.covering(s, e)) is not None]
        if not protos:
            raise ValueError("no prompt spells the concept")
        return _unit(torch.stack(protos) - self.background)

    def scores(self, prompt: str | Sequence[Reading], prototypes: torch.Tensor,
               concept: str | None = None) -> tuple[float, tuple[int, int]]:
        """The best span's cosine with the prototypes over the prompt's views, and its characters. With the
        `concept`, also the prompt with its near-spellings of the concept written as the concept (`respelt`)."""
        readings = list(self.reader.views(prompt) if isinstance(prompt, str) else prompt)
        moved: list[tuple[int, int, int, int]] = []
        if concept is not None and readings and (found := respelt(readings[0].prompt, concept)) is not None:
            text, moved = found
            extra = self.reader.views(text)
        else:
            extra = []
        best: tuple[float, tuple[int, int]] = (-1.0, (0, 0))
        for reading, is_extra in [(r, False) for r in readings] + [(r, True) for r in extra]:
            windows, spans, sizes = reading.windows()
            if spans:
                sims = (_unit(windows - self.background) @ prototypes.T).max(1).values
                top = float(sims.max())
                # The span named is the narrowest nearly as close ("red", not "a red"): what a rewrite replaces.
                near = [i for i in range(len(spans)) if float(sims[i]) >= top - SPAN_SLACK]
                i = min(near, key=lambda k: (sizes[k], -float(sims[k])))
                span = spans[i]
                if is_extra:  # back to the characters the prompt itself has there
                    span = next(((a, b) for a, b, x, y in moved if x < span[1] and span[0] < y), span)
                best = max(best, (top, span), key=lambda b: b[0])
        return best

    def _stacked(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every guarded concept's prototypes in one matrix, and which concept owns each row (cached per list)."""
        key = tuple(id(c) for c in self.concepts)
        if self._stack is None or self._stack[0] != key:
            owner = torch.cat([torch.full((c.prototypes.shape[0],), i) for i, c in enumerate(self.concepts)])
            self._stack = (key, torch.cat([c.prototypes for c in self.concepts]), owner)
        return self._stack[1], self._stack[2]

    def add(self, key: str, concept: str, anchor: str | None, threshold: float, prototypes: torch.Tensor) -> None:
        self.concepts = [c for c in self.concepts if c.key != key]
        self.concepts.append(GuardedConcept(key, concept, anchor, threshold, prototypes))

    def check(self, prompt: str) -> Trip | None:
        """The guarded concept `prompt` comes closest to past its threshold, or None."""
        thresholds = {c.key: c.threshold for c in self.concepts}
        return max(self.trips(prompt), key=lambda t: t.score - thresholds[t.key], default=None)

    def trips(self, prompt: str, readings: Sequence[Reading] | None = None) -> list[Trip]:
        """Every guarded concept `prompt` comes within its threshold of (`readings`: its views, already read)."""
        if not self.concepts:
            return []
        readings = self.reader.views(prompt) if readings is None else list(readings)
        # Every concept at once on the prompt's own views (one product); the span, and the respelt view, only
        # for a concept that trips or has a near-spelling here: a prompt costs one encoder pass per view.
        windows = [_unit(r.windows()[0] - self.background) for r in readings if r.windows()[1]]
        stacked, owner = self._stacked()
        sims = torch.cat(windows) @ stacked.T if windows else torch.full((1, stacked.shape[0]), -1.0)
        tops = torch.full((len(self.concepts),), -1.0).scatter_reduce(0, owner, sims.max(0).values, "amax").tolist()
        trips = []
        for c, top in zip(self.concepts, tops, strict=True):
            if top < c.threshold and respelt(prompt, c.concept) is None:
                continue
            score, (start, end) = self.scores(readings, c.prototypes, c.concept)
            if score >= c.threshold:
                trips.append(Trip(c.key, c.concept, score, *_whole_words(prompt, start, end)))
        return trips

    def rewrite(self, prompt: str, rounds: int = 4) -> tuple[str, list[Trip]]:
        """`prompt` with every tripped span replaced by its concept's anchor (or taken out), until none trips
        (at most `rounds` spans; a prompt still tripping then is the caller's to refuse): the ANCHOR action."""
        trips: list[Trip] = []
        for _ in range(rounds):
            trip = self.check(prompt)
            if trip is None:
                break
            trips.append(trip)
            anchor = next(c.anchor for c in self.concepts if c.key == trip.key) or ""
            prompt = re.sub(r"\s+", " ", prompt[:trip.start] + anchor + prompt[trip.end:]).strip(" ,")
        return prompt, trips


