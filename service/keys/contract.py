"""The keys domain's facts, declared once: roles, the secret's shape, the id pattern."""

from __future__ import annotations

import enum
import unicodedata


class Role(enum.StrEnum):
    ADMIN = "admin"  # everything, keys and the audit log included
    MODERATOR = "moderator"  # erasures and deployments
    GENERATOR = "generator"  # /generate only


SECRET_PREFIX = "zk_"
KEY_ID_PATTERN = r"^key_[0-9a-f]{16}$"


def person(name: str) -> str:
    """Who a key's name stands for: "ALICE", "alice" and "ａｌｉｃｅ " are one person (four-eyes compares these)."""
    return " ".join(unicodedata.normalize("NFKC", name).casefold().split())
