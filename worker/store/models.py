"""SQL tables of the framework: the inbox of events and the record of every handler run."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Text, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class EventStatus:
    RECEIVED = "received"  # stored; handed to the queue, or waiting for the sweeper
    QUEUED = "queued"  # (re)enqueued by the sweeper or a replay
    PROCESSING = "processing"
    PROCESSED = "processed"
    FAILED = "failed"  # a handler failed; a retry is scheduled
    DEAD = "dead"  # a handler ran out of attempts; `events replay` brings it back
    IGNORED = "ignored"  # no handler matches its type

    ALL = (RECEIVED, QUEUED, PROCESSING, PROCESSED, FAILED, DEAD, IGNORED)
    SETTLED = (PROCESSED, IGNORED, DEAD)


class RunStatus:
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    DEAD = "dead"


class EventSource:
    WEBHOOK = "webhook"
    RECONCILE = "reconcile"
    REPLAY = "replay"


class EventRow(Base):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(16), default=EventSource.WEBHOOK)
    status: Mapped[str] = mapped_column(String(16), default=EventStatus.RECEIVED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    object_id: Mapped[str | None] = mapped_column(String(128))
    business_id: Mapped[str | None] = mapped_column(String(128))
    occurred_at: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    # The claim that holds the lease (`processing`, until `next_attempt_at`, which its worker's
    # heartbeat renews): every settle checks it, so a worker that lost its lease settles nothing.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    # Leases in a row that ran out without a settle (the worker died or stalled): quarantine.
    lost_leases: Mapped[int] = mapped_column(Integer, default=0, server_default="0")

    __table_args__ = (
        Index("ix_events_status_received_at", "status", "received_at"),
        Index("ix_events_type_object_id", "type", "object_id"),
        Index("ix_events_received_at", "received_at"),
    )


class HandlerRunRow(Base):
    __tablename__ = "handler_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    handler: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.RUNNING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)  # as migration 0001 made it
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (UniqueConstraint("event_id", "handler", name="uq_handler_runs_event_handler"),)


class AttemptStatus:
    """How one attempt of a handler ended (`handler_attempts.status`)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # raised; retried after a back-off
    DEAD = "dead"  # raised on its last attempt
    INTERRUPTED = "interrupted"  # the worker stopped (killed, or its job timed out) during it


INTERRUPTED_ERROR = "the worker stopped during this attempt (killed, or its job timed out)"


class HandlerAttemptRow(Base):
    """One attempt of one handler on one event, kept for good: a retry or a replay adds a row and
    changes none (`handler_runs` holds only each handler's latest state)."""

    __tablename__ = "handler_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(ForeignKey("events.id", ondelete="CASCADE"))
    handler: Mapped[str] = mapped_column(String(255))
    attempt: Mapped[int] = mapped_column(Integer)  # `ctx.attempt`: counted from 1 again after a replay
    status: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)  # traceback, without SQL or its parameters
    note: Mapped[str | None] = mapped_column(Text)  # what the handler chose not to do, e.g. a stale event

    __table_args__ = (Index("ix_handler_attempts_event_id", "event_id", "id"),)
