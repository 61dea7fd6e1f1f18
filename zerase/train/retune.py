"""What an erasure changes for its next round when its evaluation misses its acceptance.

How much of the preserved prompts' energy a ΔW may use (`EraseConfig.null_space`) decides between erasing the
concept and keeping what is drawn with it, and where that line falls differs from concept to concept: on the
bundled world square erases at 0.999 and triangle is still drawn in three of four images there. One value per
category is therefore a starting point; a round that misses changes one thing:
- the concept is still drawn in its own prompts (Acc_e): one rung looser on the ladder, more room to erase; when the
  round before was one rung tighter at the same steps and drew the concept no less, the constraint was not what held
  it, and on the loosest rung there is no looser one: twice the steps once instead (circle drew 0.29 at 0.999,
  0.33 at 0.995 and 0.29 at 0.99 with 200 steps; 0.06 at 0.995 with 400);
- only attacks get it back (misspellings, Ring-A-Bell): twice the steps once, at the same constraint (triangle at
  0.995 read 0.00 in its prompts and 0.6 under string attacks at 200 steps, 0.4 at 400), then looser;
- a kept concept suffers: one rung tighter;
- both at once, or a miss no setting changes (no evaluation): nothing, the round is what the job has.
The figures above were measured by negative guidance (Eq. 5), before shapes turned into their axis's next value
(2026-12-06): the ladder's logic does not depend on them, only its examples do. No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The rungs a job may stand on, loosest first. At 0.98 a style's erasure still kept the world's concepts within 0.03
# of the base on average; 0.95 is where a character starts (zerase.train.presets.NULL_SPACE_CHARACTER), so that a
# character that harms a kept concept has a rung to tighten to.
NULL_SPACE_LADDER = (0.95, 0.98, 0.99, 0.995, 0.999)
LONGER = 2  # a round that only attacks beat trains this many times the steps, once
ERASE, ATTACK, KEPT = "acc_e", "attack_success", ("acc_ir_drop", "kept_concept_drop")


def _kinds(missed: Iterable[str]) -> set[str]:
    return {m.split(".")[0] for m in missed}


def _rung(current: float, looser: bool) -> float | None:
    rungs = [r for r in NULL_SPACE_LADDER if (r < current if looser else r > current)]
    return (max(rungs) if looser else min(rungs)) if rungs else None


def _loosening_stalled(null_space: float, steps: int, tried: Sequence[Mapping[str, Any]], acc_e: float | None) -> bool:
    """The round before stood one rung tighter at the same steps and drew the concept no more than this one."""
    if acc_e is None or not tried:
        return False
    before = tried[-1]
    return (float(before.get("null_space") or 0.0) > null_space and int(before["steps"]) == steps
            and before.get("acc_e") is not None and float(before["acc_e"]) <= acc_e)


def next_change(config: Mapping[str, Any], missed: Iterable[str], tried: Sequence[Mapping[str, Any]] = (),
                acc_e: float | None = None) -> dict[str, Any] | None:
    """The one change to `config` ({"null_space": …} or {"steps": …}) its misses ask for, or None: nothing to try.
    `tried` holds the earlier rounds' configs (with the "acc_e" each drew, where known; `acc_e`: this round's): a
    setting already tried is never tried again (it would only undo the step before), and the steps grow once."""
    kinds = _kinds(missed)
    erase, kept = bool(kinds & {ERASE, ATTACK}), bool(kinds & set(KEPT))
    if not kinds or kinds - {ERASE, ATTACK, *KEPT} or erase == kept:
        return None
    null_space, steps = float(config.get("null_space") or 0.0), int(config["steps"])
    grown = any(int(t["steps"]) != steps for t in tried)
    if not grown and (kinds == {ATTACK} or (ERASE in kinds and _loosening_stalled(null_space, steps, tried, acc_e))):
        return {"steps": steps * LONGER}
    nxt = _rung(null_space, looser=erase)
    if nxt is None and erase and not grown:  # the loosest rung and still drawn: what is left to try is time
        return {"steps": steps * LONGER}
    if nxt is None or any(abs(nxt - float(t.get("null_space") or 0.0)) < 1e-9 for t in tried):
        return None
    return {"null_space": nxt}
