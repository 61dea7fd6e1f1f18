"""The evaluation metrics on small hand-made inputs."""

from __future__ import annotations

import numpy as np

from zerase.evaluate.metrics import harmonic_balance, hit_rate, pixel_drift
from zerase.train.prompts import concept_token_positions, shuffle_words, strip_concept
from zerase.world.evaluator import probe_readings, world_attack_prompts


def test_hit_rate_counts_matching_labels():
    labels = [{"colour": "red"}, {"colour": "none"}, {"colour": "red"}, {"colour": "blue"}]
    assert hit_rate(probe_readings(labels), "red") == 0.5
    assert hit_rate([], "red") == 0.0


def test_ha_is_acc_ir_minus_acc_e():
    assert harmonic_balance(acc_erased=0.25, acc_others=0.75) == 0.5


def test_pixel_drift_is_mean_absolute_difference_on_unit_scale():
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[0] = 255
    assert abs(pixel_drift(a, b) - 0.5) < 1e-9
    assert pixel_drift(a, a) == 0.0


def test_attack_prompts_vary_the_concept_but_keep_context():
    attacks = world_attack_prompts("red")
    assert {"misspelling", "affix", "word_order", "synonym"} <= set(attacks)
    assert all("red" not in p.split() for p in attacks["misspelling"] + attacks["synonym"])
    assert any("crimson" in p for p in attacks["synonym"])
    plain = ["a red shape", "a red circle", "a red square", "a red triangle", "a red star"]
    assert all(set(p.split()) == set(q.split()) for p, q in zip(attacks["word_order"], plain))


def test_shuffle_keeps_the_concept_phrase_whole():
    import random

    rng = random.Random(0)
    for _ in range(20):
        out = shuffle_words("an art in the style of Claude Monet", "Claude Monet", rng)
        assert "Claude Monet" in out and len(out.split()) == 8
    assert strip_concept("a red circle", "red") == "a circle"


def test_concept_token_positions_follow_the_prompt(pipe):
    tok = pipe.tokenizer
    p1 = concept_token_positions(tok, "a red circle", "red")
    p2 = concept_token_positions(tok, "circle a red", "red")
    assert p1 and p2 and p1 != p2
    text = tok.apply_chat_template([{"role": "user", "content": "a red circle"}], tokenize=False,
                                   add_generation_prompt=True, enable_thinking=True)
    ids = tok(text)["input_ids"]
    assert "red" in tok.decode([ids[i] for i in p1])
    assert concept_token_positions(tok, "a blue circle", "red") == []
