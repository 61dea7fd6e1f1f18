"""The keys domain's facts, declared once: roles, the secret's shape, the id pattern."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything, keys and the audit log included
    MODERATOR = "moderator"  # erasures and deployments
    GENERATOR = "generator"  # /generate only


SECRET_PREFIX = "zk_"
KEY_ID_PATTERN = r"^key_[0-9a-f]{16}$"
