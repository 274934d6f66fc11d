"""The overview's figures: events by status, the queue, webhooks per hour, reconciliation runs
and failing hook deliveries, from the same tables and Redis keys the CLI and /metrics read.

Webhooks received per hour are the events stored (SQL); those rejected are counted per hour in
Redis by the receiver (worker/windows.py), since a refused webhook is stored nowhere."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements.models import DeliveryRow, DeliveryStatus
from worker.queue import QueueState, queue_state
from worker.reconcile.models import ReconcileRunRow
from worker.runtime import Runtime
from worker.store import EventRow, EventStatus, inbox
from worker.windows import rejected_per_hour

HOURS = 24
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Hour:
    start: datetime
    received: int
    rejected: int | None  # None: Redis did not answer


async def received_per_hour(session: AsyncSession, now: datetime) -> list[int]:
    """Events stored per hour over the last 24 hours, oldest first, the current hour last."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    stamps = await session.scalars(select(EventRow.received_at).where(EventRow.received_at >= first))
    counts = [0] * HOURS
    for stamp in stamps:
        counts[min(HOURS - 1, int((stamp - first).total_seconds() // 3600))] += 1
    return counts


def hours(now: datetime, received: list[int], rejected: list[int] | None) -> list[Hour]:
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    return [Hour(first + timedelta(hours=i), count, rejected[i] if rejected is not None else None)
            for i, count in enumerate(received)]


async def failing_deliveries(session: AsyncSession, limit: int = 10) -> tuple[int, list[DeliveryRow]]:
    """Hook deliveries given up on (`failed`) or still retrying after an error, newest first."""
    where = (DeliveryRow.status == DeliveryStatus.FAILED) | (
        (DeliveryRow.status == DeliveryStatus.PENDING) & DeliveryRow.last_error.is_not(None))
    count = int(await session.scalar(select(func.count()).select_from(DeliveryRow).where(where)) or 0)
    rows = list(await session.scalars(select(DeliveryRow).where(where).order_by(DeliveryRow.created_at.desc())
                                      .limit(limit)))
    return count, rows


async def last_runs(session: AsyncSession, limit: int = 5) -> list[ReconcileRunRow]:
    return list(await session.scalars(select(ReconcileRunRow).order_by(ReconcileRunRow.id.desc()).limit(limit)))


async def redis_figures(runtime: Runtime, now: datetime) -> tuple[QueueState | None, list[int] | None]:
    """(the arq queue, webhooks rejected per hour over the last 24 hours); None when Redis does
    not answer in time (the page still shows the rest)."""
    name = runtime.settings.QUEUE_NAME
    state: QueueState | None = None
    rejected: list[int] | None = None
    with contextlib.suppress(Exception):
        state = await asyncio.wait_for(queue_state(runtime.redis, name), REDIS_TIMEOUT_SECONDS)
    with contextlib.suppress(Exception):
        rejected = await asyncio.wait_for(rejected_per_hour(runtime.redis, name).last(HOURS, now.timestamp()),
                                          REDIS_TIMEOUT_SECONDS)
    return state, rejected


@dataclass(frozen=True)
class Overview:
    by_status: dict[str, int]
    hours: list[Hour]
    runs: list[ReconcileRunRow]
    failing_count: int
    failing: list[DeliveryRow]
    queue: QueueState | None

    @property
    def received_24h(self) -> int:
        return sum(h.received for h in self.hours)

    @property
    def rejected_24h(self) -> int | None:
        counts = [h.rejected for h in self.hours]
        return None if None in counts else sum(c or 0 for c in counts)


async def overview(runtime: Runtime) -> Overview:
    now = datetime.now(UTC)
    async with runtime.db.sessions() as session:
        by_status = await inbox.count_by_status(session, EventStatus.ALL)
        received = await received_per_hour(session, now)
        runs = await last_runs(session)
        failing_count, failing = await failing_deliveries(session)
    state, rejected = await redis_figures(runtime, now)
    return Overview(by_status, hours(now, received, rejected), runs, failing_count, failing, state)
