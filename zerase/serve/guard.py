"""A prompt guard: a takedown live in seconds, while its erasure trains (the first stage of a mitigation).

It works on what the model reads, not on spelling. A prompt is read by the pipeline's own text encoder (chat
template and all, hidden layer -2 as ZImagePipeline uses it); every span of up to MAX_SPAN of the prompt's tokens
is pooled into one feature, centred on the mean feature of general captions (a large encoder's features share
one big common direction) and compared, by cosine, with the concept's *prototypes*: its own tokens' features in
prompts that show it, respelt as training respells (zerase.prompt_pool; the evaluation's attack spellings are
left out, so they test it). A prompt trips the guard when a span comes within the concept's threshold.

The threshold is calibrated per concept on negatives, the way its false positives are promised: COCO captions
and the model's other concepts, each with a limit on the share it may trip (`calibrate`). Calibration and the
check the service applies before admitting a guard entry (`Calibration.passes`) are measured on prompts it was
not fitted on. Like Latent Guard (ECCV 2024) it is a filter in front of the model, brittle to an attacker who
optimises against it: the trained erasure follows it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from diffusers import ZImagePipeline

from zerase.corpora import COCO, rows
from zerase.pipeline import templated_caption
from zerase.prompt_pool import CATEGORY_TEMPLATES, respell
from zerase.prompts import attack_spellings, concept_spans, erase_prompts

MAX_SPAN = 4  # tokens pooled into one span: a name, a misspelt word split into pieces
BATCH = 64  # prompts per text-encoder pass when calibrating
SPAN_SLACK = 0.05  # cosine a narrower span may lose and still be the one named
RESPELLINGS = ("misspelling", "affix", "case")
REFUSE, ANCHOR = "refuse", "anchor"  # what a tripped prompt gets: a 422, or the span replaced by the anchor


@dataclass(frozen=True)
class Reading:
    """One prompt as the text encoder reads it: its content tokens' features and character offsets."""

    prompt: str
    features: torch.Tensor  # (T, D) fp32, the prompt's own tokens
    offsets: list[tuple[int, int]]  # per token, [start, end) in `prompt`

    @cached_property
    def _windows(self) -> tuple[torch.Tensor, list[tuple[int, int]], list[int]]:
        n = len(self.offsets)
        starts = [i for i in range(n) for j in range(i + 1, min(i + MAX_SPAN, n) + 1)]
        ends = [j for i in range(n) for j in range(i + 1, min(i + MAX_SPAN, n) + 1)]
        if not starts:
            return torch.zeros(0, self.features.shape[-1]), [], []
        # Mean over tokens [i, j) from a running sum: one tensor op for every window.
        total = torch.cat([torch.zeros(1, self.features.shape[-1]), self.features.cumsum(0)])
        size = torch.tensor(ends) - torch.tensor(starts)
        feats = (total[ends] - total[starts]) / size[:, None]
        spans = [(self.offsets[i][0], self.offsets[j - 1][1]) for i, j in zip(starts, ends, strict=True)]
        return feats, spans, size.tolist()

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


def _one_edit(a: str, b: str) -> bool:
    """Whether `a` becomes `b` by one deletion, insertion, substitution or swap of neighbours."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long = sorted((a, b), key=len)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))


def respelt(prompt: str, concept: str) -> tuple[str, list[tuple[int, int, int, int]]] | None:
    """`prompt` with each word that spells a one-word `concept` a letter off (concepts of 5+ letters) or with
    letters around it (4+ letters: "superMira", "purpleish") written as the concept itself, case aside; and
    where each moved ((start, end) in `prompt`, (start, end) in the new text). None: no such word.

    Not a blacklist: the rewritten prompt is read by the text encoder like any other, and its calibration and
    false-positive check include this view. Short concepts are left to the encoder ("re" is not "red")."""
    c = concept.casefold()
    if " " in c.strip() or len(c) < 4:
        return None
    out, moved, at, shift = [], [], 0, 0
    for m in re.finditer(r"\w+", prompt):
        w = m.group().casefold()
        if w == c or not (_one_edit(w, c) or c in w):
            continue
        out.append(prompt[at:m.start()] + concept)
        moved.append((m.start(), m.end(), m.start() + shift, m.start() + shift + len(concept)))
        shift += len(concept) - (m.end() - m.start())
        at = m.end()
    if not moved:
        return None
    return "".join(out) + prompt[at:], moved


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)


def _whole_words(prompt: str, start: int, end: int) -> tuple[int, int]:
    while start > 0 and prompt[start - 1].isalnum():
        start -= 1
    while end < len(prompt) and prompt[end].isalnum():
        end += 1
    return start, end


def positive_prompts(concept: str, shown: Sequence[str], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, the concept as it is spelt there): `shown` (prompts that show the concept) as they are and
    respelt as training respells, never as the evaluation's attacks (those stay unseen)."""
    rng = random.Random(seed)
    held_out = {s for ss in attack_spellings(concept).values() for s in ss}
    out = [(p, concept) for p in shown]
    while len(out) < n and shown:
        prompt = rng.choice(list(shown))
        spelled = respell(concept, rng.choice(RESPELLINGS), rng)
        # A shortened word ("red" -> "ed") is another word's piece: as a prototype it would trip on "Zed".
        if spelled in held_out or len(spelled) < len(concept) or not concept_spans(prompt, concept):
            continue
        at = concept_spans(prompt, concept)[0]
        out.append((prompt[:at[0]] + spelled + prompt[at[1]:], spelled))
    return out


def attack_prompts(concept: str, shown: Sequence[str]) -> list[str]:
    """The evaluation's string attacks on `concept`, in each of `shown`: what the guard was never fitted on."""
    out = []
    for spelled in (s for ss in attack_spellings(concept).values() for s in ss):
        for prompt in shown:
            if concept_spans(prompt, concept):
                at = concept_spans(prompt, concept)[0]
                out.append(prompt[:at[0]] + spelled + prompt[at[1]:])
    return out


def _mentions(text: str, concept: str) -> bool:
    """Whether `text` has the concept's letters anywhere ("circles", "starry"): such a caption is no negative."""
    return concept.casefold() in text.casefold()


def coco_captions(n: int, offset: int = 0, exclude: Sequence[str] = ()) -> list[str]:
    """`n` COCO captions spread over the corpus from `offset` (a different offset: a different set), none
    naming a concept in `exclude`."""
    captions = [r["prompt"].strip() for r in rows(COCO)]
    step = max(1, len(captions) // max(4 * n, 1))
    picked = [c for c in captions[offset::step] if not any(_mentions(c, x) for x in exclude)]
    return picked[:n]


@dataclass(frozen=True)
class Calibration:
    """A concept's threshold and how it did on prompts it was not fitted on."""

    threshold: float
    detection: float  # share of held-out prompts that show the concept as written and trip the guard
    attack_detection: dict[str, float]  # the same, per kind of the evaluation's string attacks (reported)
    false_positives: dict[str, float]  # per negative set (held out), share that trips it
    limits: dict[str, float]  # the promised false-positive share per negative set
    min_detection: float
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passes(self) -> bool:
        return not self.misses()

    def misses(self) -> list[str]:
        out = [f"detects {self.detection:.2f} of the concept's prompts, under {self.min_detection:.2f}"] \
            if self.detection < self.min_detection else []
        return out + [f"{v:.3f} of {k} prompts trip it, over {self.limits[k]:.3f}" for k, v in
                      self.false_positives.items() if v > self.limits[k]]

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "detection": self.detection, "attack_detection": self.attack_detection,
                "false_positives": self.false_positives, "limits": self.limits, "min_detection": self.min_detection,
                **self.details}


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
        if not self.concepts:
            return None
        readings = self.reader.views(prompt)
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
        return max(trips, key=lambda t: t.score - next(c.threshold for c in self.concepts if c.key == t.key)) \
            if trips else None

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


def _threshold(scores: Sequence[float], share: float) -> float:
    """The lowest threshold that at most `share` of `scores` reach."""
    ranked = sorted(scores, reverse=True)
    allowed = int(share * len(ranked))
    return ranked[allowed] + 1e-4 if allowed < len(ranked) else -1.0


def _shown(profile: Any, concept: str, category: str) -> tuple[list[str], list[str]]:
    """Prompts that show `concept` (the profile's, the generic and the category's templates): half to fit on,
    half held out."""
    templates = [t.format(c=concept) for t in CATEGORY_TEMPLATES.get(category, ())]
    shown = erase_prompts(concept, profile.erase_prompts(concept) + profile.erase_contexts(concept) + templates)
    return shown[::2], shown[1::2] or shown


def fit_prototypes(guard: PromptGuard, profile: Any, concept: str, category: str) -> torch.Tensor:
    """`concept`'s prototypes on a model profile (deterministic: a server recomputes them from the concept)."""
    fit, held = _shown(profile, concept, category)
    # A word reads differently at the start of a prompt (no leading space): both ends are fitted.
    return guard.prototypes(positive_prompts(concept, fit + held[:2], n=4 * len(fit)))


def calibrate_concept(guard: PromptGuard, profile: Any, concept: str, category: str, *,
                      coco_limit: float = 0.01, others_limit: float = 0.02, min_detection: float = 0.95,
                      coco: int = 400) -> tuple[Calibration, torch.Tensor]:
    """`concept`'s prototypes and threshold on a model profile, checked on prompts they were not fitted on.

    Positives are the profile's prompts showing the concept (half to fit, respelt as training respells; the
    other half, as written and under every attack spelling, held out). Negatives are `coco` COCO captions and
    the concept's neighbours (the prompts every erasure keeps, zerase.presets.unnamed_prior), each split in two
    the same way. The threshold lets half of each limit's share of the fitting negatives through, so that the
    held-out share stays within the limit."""
    from zerase.presets import unnamed_prior

    _, held = _shown(profile, concept, category)
    prototypes = fit_prototypes(guard, profile, concept, category)
    prior = unnamed_prior(profile, concept, category)
    others = [p for item in prior["neighbours"] + prior["without_concept"] for p in profile.expand_preservation(item)]
    others = [p for p in dict.fromkeys(others) if not concept_spans(p, concept)]

    def score(readings: Sequence[Reading]) -> float:
        return guard.scores(readings, prototypes, concept)[0]

    def read(prompts: Sequence[str]) -> list[list[Reading]]:
        return guard.reader.views_many(prompts, BATCH)

    def kept(readings: list[list[Reading]]) -> list[list[Reading]]:
        return [r for r in readings if not _mentions(r[0].prompt, concept)]

    coco_fit, coco_held = kept(guard.general("fit", coco)), kept(guard.general("held", coco))
    others_fit, others_held = read(others[::2]), read(others[1::2] or others)
    threshold = max(_threshold([score(r) for r in coco_fit], coco_limit / 2),
                    _threshold([score(r) for r in others_fit], others_limit / 2))

    def rate(readings: list[list[Reading]]) -> float:
        hits = [guard.scores(r, prototypes, concept)[0] >= threshold for r in readings]
        return round(sum(hits) / max(len(hits), 1), 4)

    attacks = {kind: rate(read([p[:a] + s + p[b:] for p in held for a, b in concept_spans(p, concept)[:1]
                                for s in spelt])) for kind, spelt in attack_spellings(concept).items()}
    calibration = Calibration(round(threshold, 6), rate(read(held)), attacks,
                              {"coco": rate(coco_held), "others": rate(others_held)},
                              {"coco": coco_limit, "others": others_limit}, min_detection,
                              {"prototypes": int(prototypes.shape[0]), "held_out": {
                                  "positives": len(held), "coco": len(coco_held), "others": len(others_held)}})
    return calibration, prototypes
