"""The worker's heartbeat: renew the leases of the events it is running, and hand the events
whose lease ran out (their worker died or stalled) to the queue again, within seconds.

Every LEASE_SECONDS / 3 the worker renews every lease it holds in one UPDATE. A worker that
cannot renew (the database is unreachable) keeps running; its lease may run out and another
worker take the event over, and then its settle finds another token on the row and keeps
nothing (`LeaseLost` in worker/dispatch.py): fencing, before idempotent effects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, update

from worker import queue
from worker.runtime import Runtime
from worker.store import EventRow, EventStatus, inbox
from worker.store.models import utcnow

log = logging.getLogger("dodo_worker.leases")

_EVENTS: Any = EventRow.__table__
_RENEW = (update(_EVENTS)
          .where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)),
                 _EVENTS.c.lease_token.in_(bindparam("tokens", expanding=True)),
                 _EVENTS.c.status == EventStatus.PROCESSING)
          .values(next_attempt_at=bindparam("until")))


async def renew(runtime: Runtime) -> int:
    """Renew every lease this process holds, in one statement; how many rows were renewed."""
    held = dict(runtime.leases)
    if not held:
        return 0
    until = utcnow() + timedelta(seconds=runtime.settings.LEASE_SECONDS)
    async with runtime.db.sessions() as session, session.begin():
        result = await session.execute(_RENEW, {"ids": list(held), "tokens": sorted(set(held.values())),
                                                "until": until})
    return int(getattr(result, "rowcount", 0) or 0)


async def take_over_expired(runtime: Runtime) -> int:
    """Queue the events whose lease ran out; how many were handed to the queue."""
    async with runtime.db.sessions() as session:
        expired = await inbox.expired_leases(session)
    if not expired:
        return 0
    if not await queue.enqueue_takeovers(runtime.redis, runtime.settings.QUEUE_NAME, expired):
        return 0
    log.info("%d event(s) whose lease ran out (a worker died or stalled) queued again", len(expired))
    return len(expired)


async def heartbeat(runtime: Runtime) -> None:
    """Renew, then take over what ran out, every third of the lease, until cancelled."""
    interval = runtime.settings.LEASE_SECONDS / 3
    while True:
        await asyncio.sleep(interval)
        try:
            await renew(runtime)
            await take_over_expired(runtime)
        except Exception as exc:  # the database or Redis is away: leases may run out (fencing holds)
            log.warning("could not renew %d lease(s); they may be taken over: %s",
                        len(runtime.leases), type(exc).__name__)


def start(runtime: Runtime) -> None:
    if runtime.heartbeat is None or runtime.heartbeat.done():
        runtime.heartbeat = asyncio.ensure_future(heartbeat(runtime))


async def stop(runtime: Runtime) -> None:
    task, runtime.heartbeat = runtime.heartbeat, None
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
