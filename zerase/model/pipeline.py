"""Loading a Z-Image pipeline from a local directory and running it on prompt embeddings.

The bundled tiny model and Z-Image Turbo go through exactly this code.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import ZImagePipeline
from diffusers.utils import deprecation_utils
from diffusers.utils import logging as diffusers_logging
from transformers.utils import logging as transformers_logging

from zerase.model.captions import MAX_CAPTION_TOKENS
from zerase.model.profiles import BUNDLED_MODEL_DIR

# from_pretrained is not thread-safe: its empty-weights initialisation patches torch.nn for the whole
# process while it runs, so a second load on another thread (a worker thread and a generation request in
# one `zerase serve`) can come out with weights left on the meta device.
_loading = threading.Lock()
# diffusers took `dtype` and deprecated `torch_dtype` (huggingface/diffusers#14205, which added _resolve_dtype);
# the older releases we accept know only `torch_dtype`.
_DTYPE_ARG = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """The libraries' own loading bars (pipeline components, weights) off while we load: they are not the
    command's output, and in a service they are not log lines. Restored after: a caller may want them."""
    was = diffusers_logging.is_progress_bar_enabled(), transformers_logging.is_progress_bar_enabled()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was[0]:
            diffusers_logging.enable_progress_bar()
        if was[1]:
            transformers_logging.enable_progress_bar()


def load_pipeline(model_dir: str | Path | None = None, device: str = "cpu",
                  dtype: torch.dtype = torch.float32) -> ZImagePipeline:
    """Load with no network access (local files only) and freeze every component."""
    path = Path(model_dir) if model_dir else BUNDLED_MODEL_DIR
    if not (path / "model_index.json").exists():
        raise FileNotFoundError(f"no diffusers pipeline at {path} (model_index.json missing)")
    with _loading, _no_progress_bars():
        pipe = ZImagePipeline.from_pretrained(str(path), local_files_only=True, **{_DTYPE_ARG: dtype})
    pipe.set_progress_bar_config(disable=True)
    for part in (pipe.transformer, pipe.text_encoder, pipe.vae):
        part.requires_grad_(False).eval()
    # The pipeline decodes a whole batch at once (up to 64 images at 1024 px): one image at a time instead.
    # That also keeps an image independent of its batch: decoding several at once moved pixels by one step
    # in the served model's threads.
    pipe.vae.enable_slicing()
    return pipe.to(device)


@torch.no_grad()
def encode_prompts(pipe: ZImagePipeline, prompts: list[str],
                   max_sequence_length: int = MAX_CAPTION_TOKENS) -> list[torch.Tensor]:
    """Caption features as the pipeline computes them: one (L_i, D) tensor per prompt.

    `_encode_prompt` writes the chat-templated strings back into the list it is given, so it gets a copy.
    """
    return pipe.encode_prompt(list(prompts), device=pipe.transformer.device, do_classifier_free_guidance=False,
                              max_sequence_length=max_sequence_length)[0]


def templated_caption(pipe: ZImagePipeline, prompt: str) -> str:
    """The chat-templated text the pipeline encodes for `prompt` (ZImagePipeline._encode_prompt)."""
    return pipe.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                              add_generation_prompt=True, enable_thinking=True)


def caption_length(pipe: ZImagePipeline, prompt: str) -> int:
    """Tokens in the chat-templated caption the pipeline encodes for `prompt`."""
    return len(pipe.tokenizer(templated_caption(pipe, prompt)).input_ids)  # tokenized as _encode_prompt does


@torch.no_grad()
def encode_prompts_compact(pipe: ZImagePipeline, prompts: Sequence[str],
                           pad_to_longest: bool = True) -> list[torch.Tensor]:
    """`encode_prompts` with each distinct prompt encoded once, padded to the longest caption among them
    rather than to 512 tokens (the features of real tokens do not depend on the padding up to rounding: the
    encoder is causal and masks it).

    pad_to_longest=False keeps the pipeline's 512: then a caption's features are bit-for-bit the same
    whatever else is encoded with it, which the service's batching needs (the padded length changed them
    by a rounding step in its threads)."""
    distinct = list(dict.fromkeys(prompts))
    if not distinct:
        return []
    length = max(caption_length(pipe, p) for p in distinct) if pad_to_longest else MAX_CAPTION_TOKENS
    features = dict(zip(distinct, encode_prompts(pipe, distinct, min(MAX_CAPTION_TOKENS, length)), strict=True))
    return [features[p] for p in prompts]
