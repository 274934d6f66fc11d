"""Put back on the queue whatever the inbox says should be there but may not be."""

from __future__ import annotations

import logging
from datetime import timedelta

from worker import leases, queue
from worker.runtime import Runtime
from worker.store import inbox

log = logging.getLogger("dodo_worker.sweeper")


async def sweep(runtime: Runtime, older_than: float | None = None) -> int:
    """Enqueue events never enqueued (Redis was down), overdue retries and runs of dead workers.
    Returns how many were handed to the queue."""
    settings = runtime.settings
    grace = settings.SWEEP_AFTER_SECONDS if older_than is None else older_than
    async with runtime.db.sessions() as session:
        ids = await inbox.ids_to_sweep(
            session,
            older_than=timedelta(seconds=grace),
            stuck_after=timedelta(seconds=settings.JOB_TIMEOUT_SECONDS + 30),
        )
    taken_over = await leases.take_over_expired(runtime)
    if not ids:
        return taken_over
    # An event whose job a dead worker started but never claimed holds no lease to run out: the
    # sweep takes it over once that job has been in progress for LEASE_SECONDS (queue.py).
    handed = await queue.enqueue_sweep(runtime.redis, settings.QUEUE_NAME, ids,
                                       job_timeout_seconds=settings.JOB_TIMEOUT_SECONDS,
                                       unclaimed_after_seconds=settings.LEASE_SECONDS)
    enqueued = ids if handed else []
    async with runtime.db.sessions() as session, session.begin():
        await inbox.mark_queued(session, enqueued)
    if enqueued:
        log.info("swept %d event(s) onto the queue", len(enqueued))
    return len(enqueued) + taken_over
