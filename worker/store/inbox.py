"""Queries on the inbox (`events`) and the handler-run record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from worker.store.database import Database
from worker.store.models import (
    EventRow,
    EventSource,
    EventStatus,
    HandlerRunRow,
    RunStatus,
    utcnow,
)

_COLUMN_LENGTHS = {"type": 128, "object_id": 128, "business_id": 128, "occurred_at": 64}


@dataclass(frozen=True)
class NewEvent:
    id: str
    type: str
    body: str
    source: str = EventSource.WEBHOOK
    object_id: str | None = None
    business_id: str | None = None
    occurred_at: str | None = None

    def __post_init__(self) -> None:
        # A correctly signed event must be stored whatever its shape, and a store error would make
        # Dodo retry for 27 hours: so the columns copied out of the envelope lose NUL (PostgreSQL
        # text cannot hold it) and are cut to their column's length. The body keeps all as sent.
        for name, length in _COLUMN_LENGTHS.items():
            value = getattr(self, name)
            if isinstance(value, str) and ("\x00" in value or len(value) > length):
                object.__setattr__(self, name, value.replace("\x00", "")[:length])


async def insert_events(db: Database, events: Sequence[NewEvent]) -> set[str]:
    """Store events in one statement and one transaction, each id at most once.

    Returns the ids that were new; an id already in the inbox (or earlier in `events`) is not."""
    if not events:
        return set()
    now = utcnow()
    rows = [
        {
            "id": e.id,
            "type": e.type[:128],
            "source": e.source,
            "status": EventStatus.RECEIVED,
            "attempts": 0,
            "object_id": e.object_id,
            "business_id": e.business_id[:128] if e.business_id else None,
            "occurred_at": e.occurred_at[:64] if e.occurred_at else None,
            "body": e.body,
            "received_at": now,
            "updated_at": now,
        }
        for e in events
    ]
    # executemany + RETURNING: SQLAlchemy's "insertmanyvalues" sends one multi-row INSERT from a
    # statement compiled once (up to 1,000 rows per statement).
    if db.dialect == "postgresql":
        # One statement commits by itself: without BEGIN and COMMIT around it, one round trip
        # instead of three. Past 1,000 rows (the receiver sends at most 256) each statement
        # commits on its own; a stored row whose batch then failed is queued by the sweeper.
        async with db.engine.connect() as conn:
            autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
            result = await autocommit.execute(_insert_statement(db.dialect), rows)
            return set(result.scalars())
    async with db.engine.begin() as conn:
        result = await conn.execute(_insert_statement(db.dialect), rows)
        return set(result.scalars())


@lru_cache(maxsize=4)
def _insert_statement(dialect_name: str) -> Any:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(EventRow).on_conflict_do_nothing(index_elements=["id"]).returning(EventRow.id)


async def insert_event(db: Database, *, event_id: str, event_type: str, body: str,
                       source: str = EventSource.WEBHOOK, object_id: str | None = None,
                       business_id: str | None = None, occurred_at: str | None = None) -> bool:
    """Store one event; False when an event with this id is already in the inbox."""
    new = NewEvent(id=event_id, type=event_type, body=body, source=source, object_id=object_id,
                   business_id=business_id, occurred_at=occurred_at)
    return bool(await insert_events(db, [new]))


async def get_event(session: AsyncSession, event_id: str) -> EventRow | None:
    return await session.get(EventRow, event_id)


async def get_runs(session: AsyncSession, event_id: str) -> list[HandlerRunRow]:
    result = await session.scalars(
        select(HandlerRunRow).where(HandlerRunRow.event_id == event_id).order_by(HandlerRunRow.id)
    )
    return list(result)


async def list_events(
    session: AsyncSession,
    *,
    status: str | None = None,
    event_type: str | None = None,
    limit: int = 100,
) -> Sequence[EventRow]:
    query = select(EventRow).order_by(EventRow.received_at.desc(), EventRow.id.desc()).limit(limit)
    if status:
        query = query.where(EventRow.status == status)
    if event_type:
        if event_type.endswith(".*"):
            query = query.where(EventRow.type.startswith(event_type[:-1], autoescape=True))
        else:
            query = query.where(EventRow.type == event_type)
    return (await session.scalars(query)).all()


async def ids_to_sweep(session: AsyncSession, *, older_than: timedelta, stuck_after: timedelta,
                       limit: int = 1000) -> list[str]:
    """Events that should be in the queue but may not be: never enqueued (Redis was down),
    a retry whose job is overdue, or a run whose worker died (Redis itself may have lost it).
    Re-enqueueing is harmless: arq refuses an event's job id that is already queued or running,
    and a claim skips an event that another job holds the lease of or has settled."""
    now = utcnow()
    cutoff = now - older_than
    query = (
        select(EventRow.id)
        .where(
            or_(
                and_(EventRow.status.in_([EventStatus.RECEIVED, EventStatus.QUEUED]),
                     EventRow.updated_at <= cutoff),
                and_(EventRow.status == EventStatus.FAILED, EventRow.next_attempt_at <= cutoff),
                # A claim whose lease ran out (its worker died or its job timed out) or was
                # given back (a stopping worker), or a claim from before leases (none).
                and_(EventRow.status == EventStatus.PROCESSING, EventRow.next_attempt_at <= now),
                and_(EventRow.status == EventStatus.PROCESSING, EventRow.next_attempt_at.is_(None),
                     EventRow.updated_at <= now - stuck_after),
            )
        )
        .order_by(EventRow.received_at)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def mark_queued(session: AsyncSession, event_ids: Sequence[str]) -> None:
    """`received` events just handed to the queue become `queued`; others keep their status."""
    if not event_ids:
        return
    await session.execute(
        update(EventRow)
        .where(EventRow.id.in_(event_ids), EventRow.status == EventStatus.RECEIVED)
        .values(status=EventStatus.QUEUED, updated_at=utcnow())
    )


async def reset_for_replay(session: AsyncSession, event_id: str) -> EventRow | None:
    """Give a dead (or failed, or any settled) event a fresh set of attempts.

    Handlers that already succeeded stay succeeded and are not run again. An event that a worker
    is processing now (its claim's lease has not run out) is left alone: replaying it would let a
    second job run it at the same time. None for both."""
    row = await session.get(EventRow, event_id, with_for_update=True)
    if row is None:
        return None
    if row.status == EventStatus.PROCESSING and row.next_attempt_at is not None and row.next_attempt_at > utcnow():
        return None
    row.status = EventStatus.QUEUED
    row.source = EventSource.REPLAY
    row.next_attempt_at = None
    row.processed_at = None
    row.updated_at = utcnow()
    await session.execute(
        update(HandlerRunRow)
        .where(HandlerRunRow.event_id == event_id, HandlerRunRow.status != RunStatus.SUCCEEDED)
        .values(status=RunStatus.FAILED, attempts=0)
    )
    return row


async def dead_event_ids(session: AsyncSession, limit: int = 10_000) -> list[str]:
    query = select(EventRow.id).where(EventRow.status == EventStatus.DEAD).order_by(
        EventRow.received_at).limit(limit)
    return list(await session.scalars(query))


async def count_by_status(session: AsyncSession, statuses: Sequence[str]) -> dict[str, int]:
    from sqlalchemy import func

    query = (
        select(EventRow.status, func.count())
        .where(EventRow.status.in_(statuses))
        .group_by(EventRow.status)
    )
    counts = {status: 0 for status in statuses}
    for status, count in (await session.execute(query)).all():
        counts[status] = int(count)
    return counts


async def oldest_pending_received_at(session: AsyncSession) -> datetime | None:
    query = select(EventRow.received_at).where(
        EventRow.status.in_([EventStatus.RECEIVED, EventStatus.QUEUED])
    ).order_by(EventRow.received_at).limit(1)
    return (await session.scalars(query)).first()
