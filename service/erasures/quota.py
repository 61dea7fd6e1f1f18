"""Per-key quotas on erasure jobs: how many a key may have queued or running, and what they may cost.

A job's cost is steps x rank (its LoRA's size times how long it trains), summed over the key's active
jobs. Checked under a lock on the key's row (PostgreSQL) or the database's write lock (SQLite), so a
burst of concurrent submissions cannot all pass the same check.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.core.db import serialize_writes
from service.core.errors import Exhausted
from service.core.settings import Settings
from service.erasures.contract import JobStatus
from service.erasures.models import ErasureJob
from service.keys.models import ApiKey


@dataclass(frozen=True)
class Quota:
    max_active_jobs: int
    max_active_cost: int

    @classmethod
    def of(cls, settings: Settings) -> Quota:
        return cls(settings.max_active_jobs_per_key, settings.max_active_cost_per_key)


class QuotaExceeded(Exhausted):
    code = "quota_exceeded"


def job_cost(config: dict[str, Any]) -> int:
    return int(config["steps"]) * int(config["rank"])


def check(db: Session, key_id: str, config: dict[str, Any], quota: Quota) -> None:
    """Raise QuotaExceeded if the key cannot take this job now; otherwise the lock taken here is held
    until the caller commits the job."""
    serialize_writes(db)
    db.execute(select(ApiKey.id).where(ApiKey.id == key_id).with_for_update())
    active = list(db.scalars(select(ErasureJob.config).where(
        ErasureJob.requested_key_id == key_id, ErasureJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))))
    if len(active) >= quota.max_active_jobs:
        raise QuotaExceeded(f"this key has {len(active)} erasures queued or running; at most "
                            f"{quota.max_active_jobs} (ZERASE_MAX_ACTIVE_JOBS_PER_KEY)")
    cost, spent = job_cost(config), sum(job_cost(c) for c in active)
    if spent + cost > quota.max_active_cost:
        raise QuotaExceeded(f"this job costs {cost} (steps x rank) and the key's active jobs {spent}; at most "
                            f"{quota.max_active_cost} together (ZERASE_MAX_ACTIVE_COST_PER_KEY)", "steps")
