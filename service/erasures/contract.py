"""The erasures domain's facts, declared once: the table, the HTTP schema and the worker use these."""

from __future__ import annotations

import enum

from zerase.train.config import EPSILON_MAX, EPSILON_MIN
from zerase.train.presets import Category

__all__ = ["Category", "EPSILON_MAX", "EPSILON_MIN"]


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class EventKind(enum.StrEnum):
    STATE = "state"
    METRICS = "metrics"
    ERROR = "error"
    INFO = "info"


ERASURE_ID_PATTERN = r"^er_[0-9a-f]{32}$"
EVENT_CURSOR_PATTERN = r"^[0-9]{1,18}$"
MAX_TEXT = 200  # concept, anchor, each preservation item: the width of the concept column
MAX_REASON = 2000
MAX_PRESERVATION = 64
MAX_ETA = 20.0
MAX_STEPS = 5000
MAX_RANK = 256
MAX_SEED = 2**32 - 1
MAX_PRIORITY = 9  # job priority: 0 (normal) .. 9 (most urgent)
