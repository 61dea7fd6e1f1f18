"""Training prompts for an erasure: the concept in context, word-order shuffles, token spans."""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the control plane uses erase_prompts without the model stack
    from transformers import PreTrainedTokenizerBase

GENERIC_TEMPLATES = ("{c}", "a picture of {c}", "an image of {c}", "{c}, high quality", "a photo of {c}")


def erase_prompts(concept: str, extra: list[str] | None = None) -> list[str]:
    """Prompts that show the concept: generic templates plus any given (e.g. world-specific) ones."""
    prompts = [t.format(c=concept) for t in GENERIC_TEMPLATES] + list(extra or [])
    return list(dict.fromkeys(prompts))


def attack_spellings(concept: str) -> dict[str, list[str]]:
    """The evaluation's string attacks on `concept` by kind (synonyms aside): misspelt, affixed, upper case.
    Training draws its respellings elsewhere (zerase.train.prompt_pool), so these stay unseen."""
    c = concept
    return {"misspelling": [c[:-1], c + c[-1], c[0] + c[2] + c[1] + c[3:] if len(c) > 3 else c + "e"],
            "affix": [f"x{c}", f"{c}ish", f"super{c}"], "case": [c.upper()]}


def shuffle_words(prompt: str, concept: str, rng: random.Random) -> str:
    """Shuffle word order, keeping the concept phrase whole, so its token positions move (§4.1)."""
    lower = prompt.lower()
    at = lower.find(concept.lower())
    if at < 0:
        words = prompt.split()
        rng.shuffle(words)
        return " ".join(words)
    before, phrase, after = prompt[:at], prompt[at:at + len(concept)], prompt[at + len(concept):]
    units = before.split() + [phrase] + after.split()
    rng.shuffle(units)
    return " ".join(units)


def strip_concept(prompt: str, concept: str) -> str:
    """The prompt with every whole-word occurrence of the concept taken out, its article mended: what the prompt
    shows besides the concept ("a red circle" -> "a circle", "an outlined red circle" -> "a red circle")."""
    for start, end in reversed(concept_spans(prompt, concept)):
        prompt = prompt[:start] + prompt[end:]
    return _mend_articles(re.sub(r"\s+", " ", prompt).strip(" ,"))


def replace_concept(prompt: str, concept: str, by: str) -> str:
    """Every whole-word occurrence of `concept` replaced by `by`, articles mended ("a red circle" -> "a red shape",
    "an outlined star" -> "a filled star"): a model may read the article itself (the bundled world, where only
    "outlined" takes "an", draws outlined for "an hollow circle" 0.97), so "an filled star" keeps the concept's cue."""
    for start, end in reversed(concept_spans(prompt, concept)):
        prompt = prompt[:start] + by + prompt[end:]
    return _mend_articles(prompt)


def _mend_articles(text: str) -> str:
    """"a"/"an" agreeing with the word after it."""
    return re.sub(r"\b([Aa])n? (?=(\w))",
                  lambda m: f"{m.group(1)}{'n' if m.group(2)[0].lower() in 'aeiou' else ''} ", text)


def _folded(text: str) -> tuple[str, list[int]]:
    """`text` for matching (NFD, casefolded, invisible format characters dropped), with, per folded
    character, the index of the original character it came from."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        if unicodedata.category(ch) == "Cf":  # zero-width spaces and joiners, bidi marks
            continue
        piece = unicodedata.normalize("NFD", unicodedata.normalize("NFD", ch).casefold())
        out.append(piece)
        origin += [i] * len(piece)
    return "".join(out), origin


def _word_edge(ch: str) -> bool:
    """Whether a match ending in `ch` must stop at a word boundary (not so in scripts written without
    spaces: a Chinese name sits inside the characters around it)."""
    return (ch.isalnum() or ch == "_") and unicodedata.east_asian_width(ch) not in ("W", "F")


def concept_spans(text: str, concept: str) -> list[tuple[int, int]]:
    """Every occurrence of `concept` in `text` as (start, end) character offsets of `text`: whole words
    only ("cat" is not in "category"), any case, NFC or NFD alike, invisible characters ignored."""
    needle, _ = _folded(concept.strip())
    if not needle:
        return []
    hay, origin = _folded(text)
    marks = "\u0300-\u036f"  # combining accents: part of the word they follow
    before = rf"(?<![\w{marks}])" if _word_edge(needle[0]) else ""
    base_chars = [ch for ch in needle if not unicodedata.combining(ch)] or [needle[-1]]
    after = rf"(?![\w{marks}])" if _word_edge(base_chars[-1]) else ""
    return [(origin[m.start()], origin[m.end() - 1] + 1)
            for m in re.finditer(before + re.escape(needle) + after, hay)]


def concept_token_positions(tokenizer: PreTrainedTokenizerBase, prompt: str, concept: str) -> list[int]:
    """Indices, in the pipeline's caption sequence, of the tokens that spell the concept (every occurrence).

    The pipeline wraps the prompt in the chat template and keeps every non-padding token, so
    the index is the token's index in the templated text. [] if absent.
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=True)
    at = text.find(prompt)
    spans = [(at + s, at + e) for s, e in concept_spans(prompt, concept)] if at >= 0 else []
    if not spans:
        return []
    offsets = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    return [i for i, (s, e) in enumerate(offsets) if e > s and any(e > a and s < b for a, b in spans)]


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


def as_trained(prompt: str, concepts: Sequence[str]) -> str:
    """`prompt` with each of `concepts` written as the concept wherever it is spelt otherwise: in another case or
    with invisible characters (`concept_spans`), a letter off or with letters around it (`respelt`). What a routed
    erasure is served on (zerase.serve.routing): it acts on the tokens it was trained on."""
    for concept in concepts:
        if (found := respelt(prompt, concept)) is not None:
            prompt = found[0]
        for start, end in reversed(concept_spans(prompt, concept)):
            prompt = prompt[:start] + concept + prompt[end:]
    return prompt
