"""Captions are counted as the pipeline counts them (chat template, tokens), and training never reads past
the cut the pipeline makes."""

from __future__ import annotations

import pytest

from zerase.model.captions import MAX_CAPTION_TOKENS
from zerase.model.profiles import profile_for
from zerase.train.config import EraseConfig
from zerase.train.erasure import erase
from zerase.train.presets import model_defaults

PROMPTS = ["a red circle", "  Mira  ", "😀" * 200, "日本語のテキスト" * 30, "", "Café\u0301 ⟨x⟩"]


@pytest.mark.parametrize("prompt", PROMPTS)
def test_the_count_is_the_pipelines_own(pipe, prompt: str) -> None:
    text = pipe.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                              add_generation_prompt=True, enable_thinking=True)
    captions = profile_for().captions
    assert captions.templated(prompt) == text
    assert captions.count(prompt) == len(pipe.tokenizer(text).input_ids)


def test_a_concept_past_the_cut_in_some_prompts_trains_on_the_others(pipe) -> None:
    filler = "very " * (MAX_CAPTION_TOKENS + 20)
    # 4 steps x 8 draws from 6 prompts: the long one is drawn (all but surely), and would have been gathered past
    # the caption's end (IndexError).
    config = EraseConfig(**model_defaults() | dict(concept="red", preservation=["a blue circle"], steps=4,
                         trajectories=2, erase_batch=8, preserve_batch=2, shuffle_variants=0,
                         erase_prompts=[f"{filler} red"]))
    assert erase(pipe, config).steps_done == 4


def test_a_concept_past_the_cut_everywhere_is_refused(pipe) -> None:
    long_concept = "star " * (MAX_CAPTION_TOKENS + 20) + "red"
    config = EraseConfig(**model_defaults() | dict(concept=long_concept, preservation=["a blue circle"], steps=1,
                         trajectories=2, erase_batch=2, preserve_batch=2, shuffle_variants=0))
    with pytest.raises(ValueError, match="caption tokens"):
        erase(pipe, config)
