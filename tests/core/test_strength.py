"""An erasure is served at the smallest strength that erases its concept (zerase.evaluate.strength): a short circle
erasure that leaves circles at its trained scale is served stronger, erases more so, and carries that strength in
its artifact, where every consumer of the artifact reads it."""

from __future__ import annotations

import pytest

from service.core.settings import Settings
from zerase.evaluate.strength import SEED_OFFSET, STRENGTHS, calibration_shots, choose, search_strength, strengthened
from zerase.patch.artifact import load_artifact, write_artifact
from zerase.train.erasure import erase
from zerase.train.presets import resolve


@pytest.mark.slow
def test_a_weak_erasure_is_served_stronger_and_carries_its_strength(pipe, profile, settings, tmp_path):
    evaluator = profile.evaluator()
    config = resolve("circle", "entity", steps=100, null_space=0.999)  # held short of erasing at its trained scale
    erase(pipe, config).save(tmp_path / "circle.safetensors")
    trained = load_artifact(tmp_path / "circle.safetensors", pipe)

    shots = calibration_shots(evaluator, "circle", 2, "entity")
    assert min(s.seed for s in shots) >= SEED_OFFSET  # never the evaluation's seeds
    kept = {s.prompt for s in shots if s.role == "kept"}
    assert kept and all("circle" in p for p in kept)  # only kept prompts routing sends to this erasure

    found = search_strength(pipe, trained, evaluator, settings, n_seeds=2, strengths=(1.0, 2.0), category="entity")
    first = found.tried[0]
    assert first["strength"] == 1.0 and first["acc_e"] > 0.05, found  # 100 steps leave circles at the trained scale
    assert [t["strength"] for t in found.tried] == [1.0, 2.0]
    assert found.tried[1]["acc_e"] < first["acc_e"], found  # served stronger, it erases more
    assert found.strength == 2.0 and found.tried[1]["named_kept"] is not None

    served = strengthened(trained, found.strength)
    assert served.scale == pytest.approx(2.0 * trained.scale)
    assert strengthened(served, 1.5).scale == pytest.approx(1.5 * trained.scale)  # always from the trained alpha
    reread = load_artifact(write_artifact(served, tmp_path / "served.safetensors"), pipe)
    assert reread.metadata["strength"] == 2.0 and reread.scale == pytest.approx(served.scale)

    assert search_strength(pipe, trained, evaluator, settings, n_seeds=2, strengths=(1.0,)).strength == 1.0


def test_the_service_searches_the_core_strengths_by_default(tmp_path):
    assert Settings(var_dir=tmp_path).served_strengths == list(STRENGTHS)


def tried(*rows: tuple[float, float, float | None]) -> list[dict]:
    return [{"strength": s, "acc_e": a, "named_kept": k} for s, a, k in rows]


def test_the_weakest_strength_that_erases_and_keeps_the_named_kept_prompts_is_chosen():
    # red as the world trains it: erased already, and its own damage to "a red circle" is the gate's to judge.
    assert choose(tried((1.0, 0.0, 0.83)), 0.05, 0.1) == 1.0
    # circle: 1.5x erases; 3x would too, and would cost "a blue circle" its circle.
    assert choose(tried((1.0, 0.21, 1.0), (1.5, 0.04, 0.97), (3.0, 0.0, 0.80)), 0.05, 0.1) == 1.5
    # Erasing only at a strength that wrecks the named kept prompts: the lowest Acc_e that keeps them.
    assert choose(tried((1.0, 0.5, 1.0), (1.5, 0.3, 0.95), (2.0, 0.0, 0.7)), 0.05, 0.1) == 1.5
    # Nothing reaches the target: the lowest Acc_e, the weaker of equals.
    assert choose(tried((1.0, 0.21, None), (1.5, 0.06, None), (2.0, 0.06, None)), 0.05, 0.1) == 1.5
