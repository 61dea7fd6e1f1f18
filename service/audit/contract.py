"""The audit domain's facts: field widths of an audit line."""

from __future__ import annotations

MAX_ACTION = 64
MAX_ACTOR = 200
MAX_TARGET = 200
AUDIT_CURSOR_PATTERN = r"^[0-9]{1,18}$"
