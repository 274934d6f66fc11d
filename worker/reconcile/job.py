"""The scheduled scan: an arq cron job, unique per tick across workers, single by a Redis lock."""

from __future__ import annotations

import logging
from typing import Any

from arq.cron import cron

from integrations.dodo import DodoAPIError, DodoReader
from worker.reconcile.service import Request, ScanBusy, reconcile
from worker.runtime import Runtime
from worker.settings import Settings

log = logging.getLogger("dodo_worker.reconcile")

JOB_TIMEOUT_SECONDS = 3600


async def reconcile_job(ctx: dict[str, Any]) -> str:
    runtime: Runtime = ctx["runtime"]
    client = runtime.resources.get("dodo")
    if client is None:
        log.info("reconciliation disabled: DODO_PAYMENTS_API_KEY is not set")
        return "disabled"
    try:
        report = await reconcile(runtime.settings, runtime.db, DodoReader(client), runtime.redis,
                                 Request(trigger="cron"))
    except ScanBusy:
        log.info("reconciliation skipped: another scan is running")
        return "skipped"
    except DodoAPIError as exc:
        log.error("reconciliation failed, the next run covers this window again: %s", exc)
        return "failed"
    return f"scanned {report.scanned}, repaired {len(report.repaired)}"


def schedule(interval_minutes: int) -> dict[str, Any]:
    """arq cron fields for "every N minutes" (N up to a day; a divisor of 60 or 1440 is exact)."""
    if interval_minutes < 60:
        return {"minute": set(range(0, 60, interval_minutes)), "second": 0}
    hours = max(1, interval_minutes // 60)
    return {"hour": set(range(0, 24, hours)), "minute": interval_minutes % 60, "second": 0}


def cron_jobs(settings: Settings) -> list[Any]:
    if settings.DODO_PAYMENTS_API_KEY is None:
        log.info("reconciliation disabled: DODO_PAYMENTS_API_KEY is not set")
        return []
    # At start-up too: a worker that was down catches up at once (the lock keeps it to one scan).
    return [cron(reconcile_job, name=f"{settings.QUEUE_NAME}:reconcile", unique=True, run_at_startup=True,
                 timeout=JOB_TIMEOUT_SECONDS, **schedule(settings.RECONCILE_INTERVAL_MINUTES))]
