"""What an erasure changes when it misses (zerase.train.retune): looser when the concept is still drawn, longer once
when only attacks get it back, tighter when a kept concept suffers, nothing when both or neither, and never back to
a constraint already tried."""

from __future__ import annotations

import pytest

from zerase.train.retune import NULL_SPACE_LADDER, next_change

AT_0999 = {"null_space": 0.999, "steps": 200}


@pytest.mark.parametrize("missed", [[], ["evaluation"], ["acc_e", "kept_concept_drop"], ["acc_e", "evaluation"],
                                    ["attack_success.ring_a_bell", "acc_ir_drop"]])
def test_nothing_to_try(missed: list[str]) -> None:
    assert next_change(AT_0999, missed) is None


def test_still_drawn_loosens_one_rung() -> None:
    assert next_change(AT_0999, ["acc_e"]) == {"null_space": 0.995}
    assert next_change(AT_0999, ["acc_e", "attack_success.ring_a_bell"]) == {"null_space": 0.995}
    assert next_change({"null_space": 0.993, "steps": 200}, ["acc_e"]) == {"null_space": 0.99}  # off the ladder
    loosest = {"null_space": min(NULL_SPACE_LADDER), "steps": 200}
    assert next_change(loosest, ["acc_e"]) == {"steps": 400}  # no looser rung: longer, once
    assert next_change(loosest | {"steps": 400}, ["acc_e"], tried=[loosest]) is None


def test_attacks_alone_train_longer_once_then_loosen() -> None:
    at_0995 = {"null_space": 0.995, "steps": 200}
    assert next_change(at_0995, ["attack_success.string_attacks"], tried=[AT_0999]) == {"steps": 400}
    longer = {"null_space": 0.995, "steps": 400}
    assert next_change(longer, ["attack_success.string_attacks"], tried=[AT_0999, at_0995]) == {"null_space": 0.99}


def test_harm_tightens_and_never_goes_back() -> None:
    assert next_change({"null_space": 0.99, "steps": 200}, ["kept_concept_drop"]) == {"null_space": 0.995}
    assert next_change({"null_space": 0.0, "steps": 200}, ["acc_ir_drop"]) == {"null_space": min(NULL_SPACE_LADDER)}
    assert next_change(AT_0999, ["acc_ir_drop"]) is None  # the ladder's end
    # 0.999 erased too little, 0.995 harmed a kept concept: 0.999 again would only repeat the first round.
    assert next_change({"null_space": 0.995, "steps": 200}, ["kept_concept_drop"], tried=[AT_0999]) is None


def test_erasing_longer_once_when_loosening_did_not_help() -> None:
    at_0995 = {"null_space": 0.995, "steps": 200}
    # circle: 0.29 at 0.999, 0.33 at 0.995: the constraint was not what held it.
    assert next_change(at_0995, ["acc_e"], tried=[AT_0999 | {"acc_e": 0.29}], acc_e=0.33) == {"steps": 400}
    # Loosening lowered Acc_e, or nothing says what the round before drew: one rung looser again.
    assert next_change(at_0995, ["acc_e"], tried=[AT_0999 | {"acc_e": 0.46}], acc_e=0.33) == {"null_space": 0.99}
    assert next_change(at_0995, ["acc_e"], tried=[AT_0999], acc_e=0.33) == {"null_space": 0.99}
    # The steps grow once; after that only the ladder is left.
    longer = {"null_space": 0.995, "steps": 400}
    tried = [AT_0999 | {"acc_e": 0.29}, at_0995 | {"acc_e": 0.33}]
    assert next_change(longer, ["acc_e"], tried=tried, acc_e=0.3) == {"null_space": 0.99}
