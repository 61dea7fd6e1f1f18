"""A job that tunes its own training. After each round's evaluation a judge says what the round misses (the deploy
gate's policy, installed by service.flows: this domain does not import the gate), and zerase.train.retune says what
the next round changes (the null-space share, or the steps). Each round is a job event; the job's config is the round
it trains, so an attempt that resumes after a killed worker resumes that round, and the rounds before it are read
back from the events.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.settings import Settings
from service.erasures.contract import EventKind, JobStatus
from service.erasures.lifecycle import Claim, add_event, transition
from service.erasures.models import JobEvent
from zerase.train.retune import next_change

# (settings, job id, evaluation) -> what it misses, each {metric, value, limit, concept}; [] when it passes
Judge = Callable[[Settings, str, dict[str, Any]], list[dict[str, Any]]]
_judge: Judge | None = None


def install_judge(judge: Judge | None) -> None:
    """What a round must pass (None: no judge, every job trains once, as configured)."""
    global _judge
    _judge = judge


def rounds_done(db: Session, job_id: str) -> list[dict[str, Any]]:
    """The job's earlier rounds, oldest first, as their events recorded them."""
    data = db.scalars(select(JobEvent.data).where(JobEvent.job_id == job_id).order_by(JobEvent.id))
    return [d["retune"] for d in data if isinstance(d, dict) and "retune" in d]


def judge(settings: Settings, job_id: str, evaluation: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """What this round's evaluation misses; None when nobody judges it (no judge, or no evaluation to judge)."""
    if _judge is None or not evaluation or "acc_e" not in evaluation:
        return None
    return _judge(settings, job_id, evaluation)


def next_round(settings: Settings, config: dict[str, Any], missed: list[dict[str, Any]] | None,
               done: list[dict[str, Any]]) -> dict[str, Any] | None:
    """This round's record, with the `change` the next round makes; None: publish this round (it passes, nothing
    would help, or the job has had its `retune_rounds`)."""
    if not missed or len(done) >= settings.retune_rounds:
        return None
    change = next_change(config, [m["metric"] for m in missed], [_trained(r) | {"acc_e": _acc_e(r["misses"])}
                                                                  for r in done], acc_e=_acc_e(missed))
    if change is None:
        return None
    return {"round": len(done) + 1, **_trained(config), "misses": missed, "change": change}


def start_next(db: Session, claim: Claim, config: dict[str, Any], record: dict[str, Any]) -> bool:
    """Record the round and make the job's config the next one's; False if the claim no longer holds."""
    why = "; ".join(_text(m) for m in record["misses"])
    change = record["change"]
    if "steps" in change:
        why_longer = ("a looser constraint did not lower Acc_e" if _acc_e(record["misses"]) is not None
                      else "attacks alone beat it")
        how = f"{change['steps']} steps ({why_longer}: longer, at the same constraint)"
    else:
        looser = change["null_space"] < record["null_space"]
        how = f"null_space {change['null_space']:g}, " + (
            "looser: more room to erase" if looser else "tighter: less room to harm")
    moved = transition(db, claim.job_id, [JobStatus.RUNNING], claim=claim, config=config | change)
    if moved:
        add_event(db, claim.job_id, EventKind.INFO,
                  f"round {record['round']} (null_space {record['null_space']:g}, {record['steps']} steps) misses the "
                  f"deploy gate ({why}); round {record['round'] + 1} trains with {how}", {"retune": record})
    db.commit()
    return moved


def summary(done: list[dict[str, Any]], config: dict[str, Any], missed: list[dict[str, Any]] | None) -> dict[str, Any]:
    """For the published evaluation: every round tried, and the one published."""
    last = {"round": len(done) + 1, **_trained(config), "misses": missed or []}
    return {"rounds": [*done, last], "published": last["round"]}


def _trained(config: dict[str, Any]) -> dict[str, Any]:
    """What a round changes, as it trained."""
    return {"null_space": float(config.get("null_space") or 0.0), "steps": int(config["steps"])}


def _acc_e(misses: list[dict[str, Any]]) -> float | None:
    """The Acc_e a round missed with; None when Acc_e was within the gate."""
    return next((float(m["value"]) for m in misses if m["metric"] == "acc_e" and m.get("value") is not None), None)


def _text(miss: dict[str, Any]) -> str:
    """'acc_e 0.750 > 0.25', 'kept_concept_drop (Zed) 0.500 > 0.25'."""
    who = f" ({miss['concept']})" if miss.get("concept") else ""
    if miss.get("limit") is None or not isinstance(miss.get("value"), (int, float)):
        return f"{miss['metric']}{who}: {miss.get('value')}"
    return f"{miss['metric']}{who} {miss['value']:.3f} > {miss['limit']:g}"
