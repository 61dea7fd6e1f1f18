"""The keys domain's table: API keys, stored as the sha256 of their secret."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, String
from sqlalchemy.orm import Mapped, mapped_column

from service.core.tables import Base, UTCDateTime, check_in, utcnow
from service.keys.contract import Role


class ApiKey(Base):
    """A bearer key: only the sha256 of the secret is kept (the secret is 256 random bits, so a fast
    hash is as good as a slow one); the secret is shown once, when the key is made."""

    __tablename__ = "api_key"
    __table_args__ = (CheckConstraint(check_in("role", Role), name="role"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    prefix: Mapped[str] = mapped_column(String(16))  # the secret's first characters, to recognise it by
    secret_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
