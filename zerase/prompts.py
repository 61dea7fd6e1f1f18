"""Training prompts for an erasure: the concept in context, word-order shuffles, token spans."""

from __future__ import annotations

import random
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the control plane uses erase_prompts without the model stack
    from transformers import PreTrainedTokenizerBase

GENERIC_TEMPLATES = ("{c}", "a picture of {c}", "an image of {c}", "{c}, high quality", "a photo of {c}")


def erase_prompts(concept: str, extra: list[str] | None = None) -> list[str]:
    """Prompts that show the concept: generic templates plus any given (e.g. world-specific) ones."""
    prompts = [t.format(c=concept) for t in GENERIC_TEMPLATES] + list(extra or [])
    return list(dict.fromkeys(prompts))


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
    """The prompt with the concept words removed: a same-context anchor ("a red circle" -> "a circle")."""
    stripped = re.sub(re.escape(concept), " ", prompt, flags=re.IGNORECASE)
    return re.sub(r"\s+", " ", stripped).strip(" ,")


def concept_token_positions(tokenizer: PreTrainedTokenizerBase, prompt: str, concept: str) -> list[int]:
    """Indices, in the pipeline's caption sequence, of the tokens that spell the concept.

    The pipeline wraps the prompt in the chat template and keeps every non-padding token, so
    the index is the token's index in the templated text. Case-insensitive; [] if absent.
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True, enable_thinking=True)
    at = text.lower().find(concept.lower(), text.find(prompt))
    if at < 0:
        return []
    end = at + len(concept)
    offsets = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    return [i for i, (s, e) in enumerate(offsets) if e > at and s < end and e > s]
