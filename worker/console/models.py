"""SQL tables of the operator console: its sign-in sessions and the audit trail of its actions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models import Base, UTCDateTime, utcnow


class ConsoleSessionRow(Base):
    """A signed-in operator. The cookie holds a random token; only its SHA-256 is stored, so the
    table does not let anyone sign in. `password_tag` is HMAC(token, CONSOLE_PASSWORD): a session
    made under another password no longer matches and is refused (changing the password signs
    everyone out)."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256(token), hex
    operator: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    password_tag: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConsoleAuditRow(Base):
    """One console action: who (the name given at sign-in), from where, what, on what."""

    __tablename__ = "console_audit"
    __table_args__ = (Index("ix_console_audit_target", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    operator: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str | None] = mapped_column(Text, nullable=True)
