"""Queries on the inbox (`events`) and the handler-run record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from worker.store.database import Database
from worker.store.fit import fit_text
from worker.store.models import (
    INTERRUPTED_ERROR,
    AttemptStatus,
    EventRow,
    EventSource,
    EventStatus,
    HandlerAttemptRow,
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
            if isinstance(value, str):
                object.__setattr__(self, name, fit_text(value, length))


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


async def get_attempts(session: AsyncSession, event_id: str) -> list[HandlerAttemptRow]:
    """Every attempt of every handler on the event, oldest first."""
    result = await session.scalars(
        select(HandlerAttemptRow).where(HandlerAttemptRow.event_id == event_id).order_by(HandlerAttemptRow.id)
    )
    return list(result)


@dataclass(frozen=True)
class IdMatch:
    """What an id or id prefix given on the command line names: `ids` holds up to `limit` ids,
    `count` how many events match in all."""

    ids: list[str]
    count: int


async def match_event_id(session: AsyncSession, text: str, limit: int = 5) -> IdMatch:
    """The event whose id is `text`, else the events whose id starts with it."""
    if await session.get(EventRow, text) is not None:
        return IdMatch([text], 1)
    if not text:
        return IdMatch([], 0)
    where = EventRow.id.startswith(text, autoescape=True)
    count = int(await session.scalar(select(func.count()).select_from(EventRow).where(where)) or 0)
    ids = list(await session.scalars(select(EventRow.id).where(where).order_by(EventRow.id).limit(limit)))
    return IdMatch(ids, count)


_NOTES = "dodo_worker.notes"


def add_note(session: AsyncSession, event_id: str, text: str) -> None:
    """Say, on the event's handler run, what the handler chose not to do and why (a stale event
    it skipped, say): dispatch stores it with the attempt and logs it once it commits. Only for
    code that runs inside a handler's session (`ctx.session`)."""
    session.info.setdefault(_NOTES, {}).setdefault(event_id, []).append(text)


def take_notes(session: AsyncSession, event_id: str) -> str | None:
    """The notes added for the event since the last call, joined; None when there are none."""
    notes: list[str] = session.info.get(_NOTES, {}).pop(event_id, [])
    return "; ".join(notes) or None


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
                # A claim from before leases (none); one whose lease ran out: `expired_leases`.
                and_(EventRow.status == EventStatus.PROCESSING, EventRow.next_attempt_at.is_(None),
                     EventRow.updated_at <= now - stuck_after),
            )
        )
        .order_by(EventRow.received_at)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def expired_leases(session: AsyncSession, limit: int = 1000) -> list[tuple[str, int]]:
    """Claims whose lease ran out (their worker died or stalled) or was given back (a stopping
    worker), with their attempts: (event id, attempts), oldest first."""
    query = (select(EventRow.id, EventRow.attempts)
             .where(EventRow.status == EventStatus.PROCESSING, EventRow.next_attempt_at <= utcnow())
             .order_by(EventRow.received_at).limit(limit))
    return [(event_id, attempts) for event_id, attempts in (await session.execute(query)).all()]


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
    await _keep_interrupted(session, event_id)
    await session.execute(
        update(HandlerRunRow)
        .where(HandlerRunRow.event_id == event_id, HandlerRunRow.status != RunStatus.SUCCEEDED)
        .values(status=RunStatus.FAILED, attempts=0)
    )
    return row


async def _keep_interrupted(session: AsyncSession, event_id: str) -> None:
    """Before a replay resets them, the runs still marked `running` (their worker stopped during
    the attempt) go into the history, as the next claim would have put them."""
    running = await session.scalars(select(HandlerRunRow).where(HandlerRunRow.event_id == event_id,
                                                                 HandlerRunRow.status == RunStatus.RUNNING))
    session.add_all([HandlerAttemptRow(event_id=event_id, handler=run.handler, attempt=run.attempts,
                                       status=AttemptStatus.INTERRUPTED, started_at=run.started_at,
                                       error=INTERRUPTED_ERROR) for run in running])


@dataclass(frozen=True)
class Replayed:
    """What a replay did with each id asked for."""

    replayed: list[str]  # reset, to be queued
    busy: list[str]  # a worker is processing it right now: left alone
    missing: list[str]  # no such event


async def reset_many(session: AsyncSession, event_ids: Sequence[str]) -> Replayed:
    """`reset_for_replay` each event, in the caller's transaction."""
    replayed, busy, missing = [], [], []
    for event_id in event_ids:
        if await reset_for_replay(session, event_id) is not None:
            replayed.append(event_id)
        elif await get_event(session, event_id) is not None:
            busy.append(event_id)
        else:
            missing.append(event_id)
    return Replayed(replayed, busy, sorted(set(missing)))


async def dead_event_ids(session: AsyncSession, limit: int = 10_000) -> list[str]:
    query = select(EventRow.id).where(EventRow.status == EventStatus.DEAD).order_by(
        EventRow.received_at).limit(limit)
    return list(await session.scalars(query))


async def count_by_status(session: AsyncSession, statuses: Sequence[str]) -> dict[str, int]:
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


# Views: the JSON objects `events list|show --json` print (and the HTTP API answers) --------------

def event_summary(row: EventRow) -> dict[str, Any]:
    """An event as `events list --json` prints it."""
    return {
        "id": row.id,
        "type": row.type,
        "status": row.status,
        "source": row.source,
        "attempts": row.attempts,
        "object_id": row.object_id,
        "received_at": row.received_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "processed_at": row.processed_at.isoformat() if row.processed_at else None,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "last_error": row.last_error,
    }


def attempt_views(attempts: Sequence[HandlerAttemptRow]) -> list[dict[str, Any]]:
    """One handler's attempts, oldest first. `attempt` keeps counting across replays (1, 2, ...
    over the event's whole life); `round` is 1 for the first delivery and one more after each
    replay (which counts `ctx.attempt` from 1 again, so a new round starts where it drops)."""
    views: list[dict[str, Any]] = []
    round_, previous = 1, 0
    for number, row in enumerate(attempts, start=1):
        if row.attempt <= previous:
            round_ += 1
        previous = row.attempt
        views.append({"attempt": number, "round": round_, "status": row.status,
                      "started_at": row.started_at.isoformat() if row.started_at else None,
                      "duration_ms": round(row.duration_ms, 3) if row.duration_ms is not None else None,
                      "error": row.error, "note": row.note})
    return views


def handler_view(run: HandlerRunRow, attempts: Sequence[HandlerAttemptRow]) -> dict[str, Any]:
    """A handler on an event: its latest state (`attempts` counts this round, the one that
    MAX_ATTEMPTS limits), its latest note, and every attempt ever made in `runs`."""
    runs = attempt_views(attempts)
    return {
        "name": run.handler,
        "status": run.status,
        "attempts": run.attempts,
        "error": run.last_error,
        "note": runs[-1]["note"] if runs else None,
        "duration_ms": round(run.duration_ms, 3) if run.duration_ms is not None else None,
        "idempotency_key": f"{run.event_id}:{run.handler}",
        "runs": runs,
    }


async def event_detail(session: AsyncSession, event_id: str) -> dict[str, Any] | None:
    """An event as `events show --json` prints it, with each handler and all its attempts."""
    row = await get_event(session, event_id)
    if row is None:
        return None
    by_handler: dict[str, list[HandlerAttemptRow]] = {}
    for attempt in await get_attempts(session, event_id):
        by_handler.setdefault(attempt.handler, []).append(attempt)
    handlers = [handler_view(run, by_handler.get(run.handler, [])) for run in await get_runs(session, event_id)]
    return {**event_summary(row), "handlers": handlers, "body": row.body}
