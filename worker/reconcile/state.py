"""The high-water mark of scheduled scans and the record of each run, in SQL."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update

from worker.reconcile.models import ReconcileRunRow, ReconcileStateRow
from worker.settings import Settings
from worker.store import Database
from worker.store.models import utcnow

STATE_NAME = "default"


async def get_high_water(db: Database) -> datetime | None:
    async with db.sessions() as session:
        row = await session.get(ReconcileStateRow, STATE_NAME)
        return row.high_water if row is not None else None


async def advance_high_water(db: Database, until: datetime) -> None:
    """Move the mark forward to `until` (never back)."""
    async with db.sessions() as session, session.begin():
        row = await session.get(ReconcileStateRow, STATE_NAME, with_for_update=True)
        if row is None:
            session.add(ReconcileStateRow(name=STATE_NAME, high_water=until, updated_at=utcnow()))
        elif row.high_water < until:
            row.high_water = until
            row.updated_at = utcnow()


def default_window(settings: Settings, high_water: datetime | None, now: datetime) -> tuple[datetime, datetime]:
    """From the last scan's mark less the overlap (or the look-back on a first scan) up to now."""
    if high_water is None:
        return now - timedelta(hours=settings.RECONCILE_LOOKBACK_HOURS), now
    return min(high_water - timedelta(minutes=settings.RECONCILE_OVERLAP_MINUTES), now), now


async def start_run(db: Database, *, trigger: str, since: datetime | None, until: datetime | None,
                    metadata: dict[str, str] | None, status: str = "running",
                    error: str | None = None) -> int:
    now = utcnow()
    row = ReconcileRunRow(trigger=trigger, status=status, started_at=now, window_since=since,
                          window_until=until, metadata_filter=json.dumps(metadata) if metadata else None,
                          dry_run=False, scanned=0, repaired=0, dead=0, api_calls=0, error=error,
                          finished_at=now if status != "running" else None)
    async with db.sessions() as session, session.begin():
        session.add(row)
        await session.flush()
        return row.id


async def finish_run(db: Database, run_id: int, *, status: str, summary: dict[str, Any] | None = None,
                     error: str | None = None) -> None:
    summary = summary or {}
    async with db.sessions() as session, session.begin():
        row = await session.get(ReconcileRunRow, run_id)
        if row is None:
            return
        row.status = status
        row.finished_at = utcnow()
        row.scanned = int(summary.get("scanned", 0))
        row.repaired = len(summary.get("repaired", []))
        row.dead = len(summary.get("dead", []))
        row.api_calls = int(summary.get("api_calls", 0))
        row.error = error
        row.summary = json.dumps(summary, default=str) if summary else None


async def close_orphaned_runs(db: Database) -> int:
    """Runs still `running` when a new scan takes the lock were cut short by a process that died
    (a killed worker's lease lapses after its TTL): mark them `interrupted`."""
    async with db.sessions() as session, session.begin():
        result = await session.execute(
            update(ReconcileRunRow).where(ReconcileRunRow.status == "running")
            .values(status="interrupted", finished_at=utcnow(), error="the process running it stopped"))
        return int(getattr(result, "rowcount", 0) or 0)


async def recent_runs(db: Database, limit: int = 20) -> list[ReconcileRunRow]:
    async with db.sessions() as session:
        query = select(ReconcileRunRow).order_by(ReconcileRunRow.id.desc()).limit(limit)
        return list(await session.scalars(query))
