"""The keys domain's table: API keys, stored as the sha256 of their secret."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, String, Text, false
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
    # The key that made this one (None: the command line): four-eyes follows this line back to the requester.
    created_by_key_id: Mapped[str | None] = mapped_column(String(40))
    # An admin key made under approvals waits for a second admin; it is refused until then.
    pending_approval: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ConsoleSession(Base):
    """A signed-in console user: the browser holds a random token in an HttpOnly cookie, the database its
    sha256, the key it stands for and the session's CSRF token. Revoking the key ends its sessions."""

    __tablename__ = "console_session"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(ForeignKey("api_key.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    flash: Mapped[str | None] = mapped_column(Text)  # one message for the next page shown (post/redirect/get)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
