"""A whole reconciliation run, as the cron job and the CLI start it: the window, the lock, the
run's record, the scan and the high-water mark.

It comes in two steps so that the cron job can stay short: `begin` (milliseconds: choose the
window, take the lock, record the run) and `execute` (the scan itself, which may take minutes;
the worker runs it as a background task, see job.py). `reconcile` does both, for the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from integrations.dodo import DodoAPIError, DodoReader
from worker.reconcile import state
from worker.reconcile.lock import LockLost, ScanLock, lock_key
from worker.reconcile.scan import PageHook, Progress, Scanner, ScanReport
from worker.settings import Settings
from worker.store import Database
from worker.store.models import utcnow

log = logging.getLogger("dodo_worker.reconcile")


class ScanBusy(Exception):
    """Another scan holds the lock."""


class EmptyWindow(ValueError):
    """`since` is not before `until`."""


@dataclass
class Request:
    trigger: str = "cli"  # cron or cli
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    metadata: dict[str, str] | None = None
    require_lock: bool = True  # False: go on without the lock when Redis cannot be reached
    # Leave out objects younger than this (when `until` is not given): their webhook is most
    # likely on its way, and a synthetic twin would only run the handlers a second time.
    settle: timedelta = timedelta(0)


@dataclass
class Run:
    """A run that has begun: its window, its lock (if any) and its record (none for a dry run)."""

    request: Request
    since: datetime
    until: datetime
    moves_mark: bool  # a full scan contiguous with the last one: its end becomes the new mark
    lock: ScanLock | None = None
    run_id: int | None = None
    redis: ArqRedis | None = None


async def begin(settings: Settings, db: Database, redis: ArqRedis | None, request: Request) -> Run:
    """Choose the window, take the lock and record the run. Raises EmptyWindow, or ScanBusy
    (after recording the run as `skipped`) when another scan holds the lock."""
    now = utcnow()
    high_water = await state.get_high_water(db)
    default_since, default_until = state.default_window(settings, high_water, now)
    since = request.since or default_since
    until = min(request.until or default_until - request.settle, now)
    if since >= until:
        raise EmptyWindow(f"the window is empty: since {since.isoformat()} is not before {until.isoformat()}")
    # The mark moves only over a window that starts no later than where the schedule would
    # start it, and only for a full scan (a --metadata scan skips everything else).
    moves_mark = not request.metadata and since <= default_since
    if request.dry_run:  # reads only: no lock, no record, no mark
        return Run(request, since, until, moves_mark=False)

    lock: ScanLock | None = None
    if redis is not None:
        lock = ScanLock(redis, lock_key(settings.QUEUE_NAME))
        try:
            acquired = await lock.acquire()
        except (RedisError, OSError, TimeoutError) as exc:
            if request.require_lock:
                raise
            log.warning("Redis unreachable (%s): scanning without the lock; the sweeper will queue "
                        "what this scan repairs", type(exc).__name__)
            lock, redis = None, None
        else:
            if not acquired:
                await state.start_run(db, trigger=request.trigger, since=since, until=until,
                                      metadata=request.metadata, status="skipped",
                                      error="another scan was running")
                raise ScanBusy("another reconciliation scan is running")
    if lock is not None:
        # We hold the lock, so a run still marked `running` belongs to a process that died.
        await state.close_orphaned_runs(db)
    run_id = await state.start_run(db, trigger=request.trigger, since=since, until=until,
                                   metadata=request.metadata)
    return Run(request, since, until, moves_mark=moves_mark, lock=lock, run_id=run_id, redis=redis)


async def execute(run: Run, settings: Settings, db: Database, reader: DodoReader,
                  progress: Progress | None = None) -> ScanReport:
    """Scan the run's window, record how it ended, move the mark and release the lock.
    Raises DodoAPIError when the API cannot be read (the mark stays, so the next run covers
    the window again), LockLost if the lease lapsed; a cancelled scan is recorded `interrupted`."""
    request, lock = run.request, run.lock
    scanner = Scanner(db, reader, redis=run.redis, queue_name=settings.QUEUE_NAME, dry_run=request.dry_run,
                      metadata=request.metadata, progress=progress,
                      on_page=_checker(lock) if lock is not None else None)
    try:
        if lock is not None:
            async with lock.kept_alive():
                report = await scanner.scan(run.since, run.until)
        else:
            report = await scanner.scan(run.since, run.until)
    except BaseException as exc:
        if run.run_id is not None:
            status, message = _failure(exc)
            with contextlib.suppress(Exception):
                await asyncio.shield(state.finish_run(db, run.run_id, status=status, error=message))
        raise
    finally:
        if lock is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):  # else it expires by itself
                await lock.release()
    if run.run_id is not None:
        await state.finish_run(db, run.run_id, status="ok", summary=report.as_json())
        if run.moves_mark:
            await state.advance_high_water(db, run.until)
    log.info("reconciliation: %d object(s) read in %d call(s), %d repaired, %d dead, %.1fs",
             report.scanned, report.api_calls, len(report.repaired), len(report.dead), report.seconds)
    for dead in report.dead:
        log.warning("%s %s: its event %s is dead; fix the handler and run `dodo-worker events replay %s`",
                    dead["kind"], dead["id"], dead["event_id"], dead["event_id"])
    return report


async def reconcile(settings: Settings, db: Database, reader: DodoReader, redis: ArqRedis | None,
                    request: Request, progress: Progress | None = None) -> ScanReport:
    """Run one scan from start to end (the CLI's way)."""
    run = await begin(settings, db, redis, request)
    return await execute(run, settings, db, reader, progress)


def _checker(lock: ScanLock) -> PageHook:
    async def check() -> None:
        lock.check()

    return check


def _failure(exc: BaseException) -> tuple[str, str]:
    if isinstance(exc, asyncio.CancelledError):
        return "interrupted", "the process stopped during the scan; the next run covers its window"
    if isinstance(exc, DodoAPIError | LockLost):
        return "failed", str(exc)
    return "failed", type(exc).__name__


__all__ = ["EmptyWindow", "Request", "Run", "ScanBusy", "begin", "execute", "reconcile"]
