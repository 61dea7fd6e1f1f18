"""What an erasure changes for its next round when its evaluation misses its acceptance.

How much of the preserved prompts' energy a ΔW may use (`EraseConfig.null_space`) decides between erasing the
concept and keeping what is drawn with it, and where that line falls differs from concept to concept: on the
bundled world square erases at 0.999 and triangle is still drawn in three of four images there. One value per
category is therefore a starting point; a round that misses changes one thing:
- the concept is still drawn in its own prompts (Acc_e): one rung looser on the ladder, more room to erase;
- only attacks get it back (misspellings, Ring-A-Bell): twice the steps once, at the same constraint (triangle at
  0.995 read 0.00 in its prompts and 0.6 under string attacks at 200 steps, 0.4 at 400), then looser;
- a kept concept suffers: one rung tighter;
- both at once, or a miss no setting changes (no evaluation): nothing, the round is what the job has.
No torch here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# The rungs a job may stand on, loosest first. At 0.98 a style's erasure still kept the world's concepts within 0.03
# of the base on average.
NULL_SPACE_LADDER = (0.98, 0.99, 0.995, 0.999)
LONGER = 2  # a round that only attacks beat trains this many times the steps, once
ERASE, ATTACK, KEPT = "acc_e", "attack_success", ("acc_ir_drop", "kept_concept_drop")


def _kinds(missed: Iterable[str]) -> set[str]:
    return {m.split(".")[0] for m in missed}


def _rung(current: float, looser: bool) -> float | None:
    rungs = [r for r in NULL_SPACE_LADDER if (r < current if looser else r > current)]
    return (max(rungs) if looser else min(rungs)) if rungs else None


def next_change(config: Mapping[str, Any], missed: Iterable[str],
                tried: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any] | None:
    """The one change to `config` ({"null_space": …} or {"steps": …}) its misses ask for, or None: nothing to try.
    `tried` holds the earlier rounds' configs: a setting already tried is never tried again (it would only undo
    the step before), and the steps grow once."""
    kinds = _kinds(missed)
    erase, kept = bool(kinds & {ERASE, ATTACK}), bool(kinds & set(KEPT))
    if not kinds or kinds - {ERASE, ATTACK, *KEPT} or erase == kept:
        return None
    null_space, steps = float(config.get("null_space") or 0.0), int(config["steps"])
    if kinds == {ATTACK} and not any(int(t["steps"]) != steps for t in tried):
        return {"steps": steps * LONGER}
    nxt = _rung(null_space, looser=erase)
    if nxt is None or any(abs(nxt - float(t.get("null_space") or 0.0)) < 1e-9 for t in tried):
        return None
    return {"null_space": nxt}
