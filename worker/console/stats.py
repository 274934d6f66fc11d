"""The overview's figures: events by status, the queue, webhooks per hour, reconciliation runs
and failing hook deliveries, from the same tables and Redis keys the CLI and /metrics read."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements.models import DeliveryRow, DeliveryStatus
from worker.reconcile.models import ReconcileRunRow
from worker.runtime import Runtime
from worker.store import EventRow, EventStatus, inbox

HOURS = 24
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass(frozen=True)
class Hour:
    start: datetime
    received: int


async def received_per_hour(session: AsyncSession, now: datetime) -> list[Hour]:
    """Events stored per hour over the last 24 hours, oldest first (each hour a bar)."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    stamps = await session.scalars(select(EventRow.received_at).where(EventRow.received_at >= first))
    counts = [0] * HOURS
    for stamp in stamps:
        counts[min(HOURS - 1, int((stamp - first).total_seconds() // 3600))] += 1
    return [Hour(first + timedelta(hours=i), count) for i, count in enumerate(counts)]


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


async def redis_figures(runtime: Runtime) -> tuple[int | None, float | None]:
    """(jobs waiting in the queue, webhooks rejected since the counters began); None when Redis
    does not answer in time (the page still shows the rest)."""
    depth: int | None = None
    rejected: float | None = None
    with contextlib.suppress(Exception):
        depth = int(await asyncio.wait_for(runtime.redis.zcard(runtime.settings.QUEUE_NAME), REDIS_TIMEOUT_SECONDS))
    with contextlib.suppress(Exception):
        values = await asyncio.wait_for(runtime.metrics.snapshot(), REDIS_TIMEOUT_SECONDS)
        rejected = sum(v for k, v in values.items() if k.startswith("dodo_webhooks_rejected_total"))
    return depth, rejected


@dataclass(frozen=True)
class Overview:
    by_status: dict[str, int]
    oldest_waiting: timedelta | None
    hours: list[Hour]
    runs: list[ReconcileRunRow]
    failing_count: int
    failing: list[DeliveryRow]
    queue_depth: int | None
    rejected_total: float | None


async def overview(runtime: Runtime) -> Overview:
    now = datetime.now(UTC)
    async with runtime.db.sessions() as session:
        by_status = await inbox.count_by_status(session, EventStatus.ALL)
        oldest = await inbox.oldest_pending_received_at(session)
        hours = await received_per_hour(session, now)
        runs = await last_runs(session)
        failing_count, failing = await failing_deliveries(session)
    depth, rejected = await redis_figures(runtime)
    return Overview(by_status, now - oldest if oldest is not None else None, hours, runs, failing_count, failing,
                    depth, rejected)
