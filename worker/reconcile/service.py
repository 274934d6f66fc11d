"""A whole reconciliation run, as the cron job and the CLI start it: the lock, the window, the
scan, the run's record and the high-water mark."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from integrations.dodo import DodoAPIError, DodoReader
from worker.reconcile import state
from worker.reconcile.lock import ScanLock, lock_key
from worker.reconcile.scan import Progress, ScanReport, Scanner
from worker.settings import Settings
from worker.store import Database
from worker.store.models import utcnow

log = logging.getLogger("dodo_worker.reconcile")


class ScanBusy(Exception):
    """Another scan holds the lock."""


@dataclass
class Request:
    trigger: str = "cli"  # cron or cli
    since: datetime | None = None
    until: datetime | None = None
    dry_run: bool = False
    metadata: dict[str, str] | None = None
    require_lock: bool = True  # False: go on without the lock when Redis cannot be reached


async def reconcile(settings: Settings, db: Database, reader: DodoReader, redis: ArqRedis | None,
                    request: Request, progress: Progress | None = None) -> ScanReport:
    """Run one scan. Raises ScanBusy when another scan is running, DodoAPIError when the API
    cannot be read (the mark stays where it was, so the next run covers the window again)."""
    now = utcnow()
    high_water = await state.get_high_water(db)
    since, until = state.default_window(settings, high_water, now)
    since = request.since or since
    until = min(request.until or until, now)
    if since >= until:
        raise ValueError(f"the window is empty: since {since.isoformat()} is not before {until.isoformat()}")
    scanner_kwargs = {"dry_run": request.dry_run, "metadata": request.metadata, "progress": progress}

    if request.dry_run:  # reads only: no lock, no record, no mark
        return await Scanner(db, reader, **scanner_kwargs).scan(since, until)  # type: ignore[arg-type]

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

    run_id = await state.start_run(db, trigger=request.trigger, since=since, until=until,
                                   metadata=request.metadata)
    scanner = Scanner(db, reader, redis=redis, queue_name=settings.QUEUE_NAME,
                      on_page=lock.refresh if lock is not None else None, **scanner_kwargs)  # type: ignore[arg-type]
    try:
        report = await scanner.scan(since, until)
    except BaseException as exc:
        message = str(exc) if isinstance(exc, DodoAPIError) else type(exc).__name__
        await state.finish_run(db, run_id, status="failed", error=message)
        raise
    finally:
        if lock is not None:
            try:
                await lock.release()
            except (RedisError, OSError, TimeoutError):
                pass  # it expires by itself
    await state.finish_run(db, run_id, status="ok", summary=report.as_json())
    # The mark moves only over a window scanned in full from where the last one stopped.
    contiguous = high_water is None or since <= high_water
    if not request.metadata and contiguous:
        await state.advance_high_water(db, until)
    log.info("reconciliation: %d object(s) read in %d call(s), %d repaired, %d dead, %.1fs",
             report.scanned, report.api_calls, len(report.repaired), len(report.dead), report.seconds)
    for dead in report.dead:
        log.warning("%s %s: its event %s is dead; fix the handler and run `dodo-worker events replay %s`",
                    dead["kind"], dead["id"], dead["event_id"], dead["event_id"])
    return report
