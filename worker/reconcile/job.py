"""The scheduled scan: an arq cron job that starts a scan in the background and returns at once.

Why not run the scan inside the arq job: arq keeps every job's in-progress key for
max(all function timeouts) + 10 s, so one long timeout (a 10,000-payment scan may take minutes)
would make a killed worker's ordinary event jobs wait that long before another worker may take
them. So the cron job keeps the default JOB_TIMEOUT_SECONDS and only does the quick part
(`service.begin`: window, Redis lease, run record); the scan itself runs as an asyncio task held
by the worker's `Reconciler` (in `runtime.resources`). The lease (60 s, renewed while scanning)
keeps it single across workers; stopping the worker cancels the task and records the run as
`interrupted`; a killed worker's lease lapses within a minute and its run is marked
`interrupted` by the next one.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

from arq.cron import cron

from integrations.dodo import DodoAPIError, DodoReader
from worker import alerts
from worker.reconcile.lock import LockLost
from worker.reconcile.service import Request, Run, ScanBusy, begin, execute
from worker.runtime import Runtime
from worker.settings import Settings

log = logging.getLogger("dodo_worker.reconcile")

RESOURCE = "reconciler"
# Scheduled scans stop this far before now: Dodo sends a webhook within seconds of the event, so
# an object younger than this most likely has its webhook on the way (the next scan covers it).
SETTLE = timedelta(minutes=2)


class Reconciler:
    """Starts scans as background tasks of the worker process and stops them when it closes.

    Whichever worker picks a cron job up (any worker on the queue may), `begin` takes the
    shared lease first, so a second scan anywhere is recorded as `skipped` and never starts."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self.tasks)

    async def start(self, trigger: str = "cron") -> str:
        """Begin a scan and leave it running; what happened, in a word."""
        runtime = self.runtime
        client = runtime.resources.get("dodo")
        if client is None:
            log.info("reconciliation disabled: DODO_PAYMENTS_API_KEY is not set")
            return "disabled"
        try:
            run = await begin(runtime.settings, runtime.db, runtime.redis, Request(trigger=trigger, settle=SETTLE))
        except ScanBusy:
            log.info("reconciliation skipped: another scan is running")
            return "skipped"
        task = asyncio.create_task(self._scan(run, DodoReader(client)), name="dodo-worker reconcile")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return "started"

    async def _scan(self, run: Run, reader: DodoReader) -> None:
        try:
            await alerts.scan_watched(self.runtime, execute(run, self.runtime.settings, self.runtime.db, reader))
        except (DodoAPIError, LockLost) as exc:
            log.error("reconciliation failed, the next run covers this window again: %s", exc)
        except asyncio.CancelledError:
            log.info("reconciliation interrupted by shutdown; the next run covers its window")
            raise
        except Exception:
            log.exception("reconciliation failed")

    async def aclose(self) -> None:
        """Called when the worker's runtime closes: stop a running scan (it records itself)."""
        tasks = [task for task in self.tasks if not task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


async def reconcile_job(ctx: dict[str, Any]) -> str:
    runtime: Runtime = ctx["runtime"]
    reconciler = runtime.resources.get(RESOURCE)
    if not isinstance(reconciler, Reconciler):
        log.info("reconciliation disabled: DODO_PAYMENTS_API_KEY is not set")
        return "disabled"
    return await reconciler.start("cron")


def attach(runtime: Runtime) -> None:
    """Give a worker's runtime its Reconciler (when an API key is set). Put it in resources
    before the Dodo client so that closing the runtime stops the scan before the client."""
    if runtime.settings.DODO_PAYMENTS_API_KEY is not None:
        runtime.resources.setdefault(RESOURCE, Reconciler(runtime))


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
    # No timeout of its own: the job only starts the scan (see the module docstring).
    return [cron(reconcile_job, name=f"{settings.QUEUE_NAME}:reconcile", unique=True, run_at_startup=True,
                 **schedule(settings.RECONCILE_INTERVAL_MINUTES))]
