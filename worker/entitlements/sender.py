"""Sending claimed hook deliveries: each one its own task, settled on its own.

A pass (the cron tick every second, or the end of any delivery) claims what is due and starts one
task per delivery; it does not wait for them. So an endpoint that hangs for HOOKS_TIMEOUT_SECONDS
delays only its own deliveries: the others are claimed, sent and recorded meanwhile. A worker
process sends at most HOOKS_CONCURRENCY at once and at most HOOKS_TARGET_CONCURRENCY to one target
(its lane), so a hanging endpoint with a backlog cannot take every slot either.

Exactly once per attempt as before: a claimed delivery is leased (delivery.claim) until it is
recorded, and a newer delivery of the same grant to the same target waits while it is pending.
The end of a delivery starts another pass at once: a held-back `revoked` goes out right after its
`granted`, and a short back-off is waited for within the pass window instead of the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from dataclasses import replace
from functools import partial
from typing import Any

import httpx
from arq.cron import cron
from sqlalchemy import func, or_, select

from integrations.hooks import HookResult, hook_client, redact, send_hook
from worker import alerts
from worker.entitlements import outbox
from worker.entitlements.delivery import (
    PYTHON_PREFIX,
    Claimed,
    call_python_hook,
    catalog_of,
    claim,
    record,
    release,
)
from worker.entitlements.models import DeliveryRow, DeliveryStatus
from worker.runtime import Runtime
from worker.scrub import scrub
from worker.settings import Settings
from worker.store import Database
from worker.store.models import utcnow

log = logging.getLogger("dodo_worker.hooks")

PASS_WINDOW_SECONDS = 0.9  # a pass keeps sending retries that fall due until the next tick
CLOSE_GRACE_SECONDS = 2.0  # a stopping worker waits this long for deliveries in flight
RESOURCE = "hooks_sender"


class Sender:
    """One per worker process (`sender_of`): the deliveries in flight, by id and by target."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.busy: Counter[str] = Counter()
        self.lock = asyncio.Lock()
        self.again = False  # a delivery ended during a pass: claim once more before it ends
        self.kicked: asyncio.Task[int] | None = None
        self.closing = False
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        # One client per process (loading the CA bundle takes ~20 ms); closed by `aclose`.
        if self._client is None:
            settings = self.runtime.settings
            self._client = hook_client(settings.HOOKS_TIMEOUT_SECONDS, settings.HOOKS_ALLOW_PRIVATE_NETWORKS)
        return self._client

    async def run_pass(self) -> int:
        """Claim and start what is due, again while deliveries keep ending or retries fall due
        within the window; how many were started. One pass at a time per process."""
        if self.lock.locked():
            self.again = True
            return 0
        async with self.lock:
            loop = asyncio.get_running_loop()
            window_ends = loop.time() + PASS_WINDOW_SECONDS
            total = 0
            while not self.closing and loop.time() < window_ends:
                self.again = False
                started = await self.start_due()
                total += started
                if started or self.again:
                    continue
                # A retry due before the next tick (short back-offs) goes out now, not a second later.
                wait = await seconds_until_due(self.runtime.db, self.runtime.settings)
                if wait is None or loop.time() + wait > window_ends:
                    break
                await asyncio.sleep(wait)
            return total

    async def start_due(self) -> int:
        """Claim what is due (as much as this process has room for) and start a task for each."""
        room = self.runtime.settings.HOOKS_CONCURRENCY - len(self.tasks)
        if room <= 0:
            return 0
        items = await claim(self.runtime.db, self.runtime.settings, catalog=catalog_of(self.runtime), room=room,
                            busy=self.busy)
        for item in items:
            self.busy[item.target] += 1
            task = asyncio.create_task(self.deliver(item), name=f"hook {item.id}")
            self.tasks[item.id] = task
            task.add_done_callback(partial(self._ended, item))
        return len(items)

    def _ended(self, item: Claimed, _: asyncio.Task[None]) -> None:
        self.tasks.pop(item.id, None)
        self.busy[item.target] -= 1
        if self.busy[item.target] <= 0:
            del self.busy[item.target]
        self.kick()

    def kick(self) -> None:
        """Start a pass now, in the background (or once more at the end of the running one)."""
        if self.closing:
            return
        if self.lock.locked():
            self.again = True
        elif self.kicked is None or self.kicked.done():
            self.kicked = asyncio.create_task(self._background_pass(), name="hook pass")

    async def _background_pass(self) -> int:
        try:
            return await self.run_pass()
        except Exception:  # the store is down, say: the next tick tries again
            log.exception("hook delivery pass failed")
            return 0

    async def deliver(self, item: Claimed) -> None:
        """Send one delivery, record its outcome, count and log it."""
        runtime, settings = self.runtime, self.runtime.settings
        timeout = settings.HOOKS_TIMEOUT_SECONDS
        try:
            if item.target.startswith(PYTHON_PREFIX):
                kind, result = "python", await call_python_hook(item, timeout)
            else:
                kind = "url"
                secret = settings.HOOKS_SIGNING_KEY.get_secret_value() if settings.HOOKS_SIGNING_KEY else ""
                result = await send_hook(self.client, item.target, item.payload.encode(), message_id=item.id,
                                         secret=secret, seconds=timeout, allow_http=settings.HOOKS_ALLOW_HTTP)
            result = scrubbed(result)
            status = await record(runtime.db, settings, item, result)
        except Exception:  # not recorded: the lease runs out and the delivery is tried again
            log.exception("hook %s for grant %s: the attempt could not be recorded", item.id, item.grant_id)
            return
        alerts.hook_outcome(runtime, item, status, result.detail)
        runtime.metrics.inc("dodo_hook_deliveries_total", result=status if status != "pending" else "retry",
                            kind=kind)
        where = item.target if kind == "python" else redact(item.target)
        level = logging.INFO if status == DeliveryStatus.DELIVERED else logging.WARNING
        log.log(level, "hook %s %s for grant %s to %s: %s, attempt %d, now %s", item.id, item.event_type,
                item.grant_id, where, result.detail, item.attempts, status)

    async def idle(self) -> None:
        """Wait until nothing is in flight (tests)."""
        while self.tasks:
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def aclose(self) -> None:
        """The worker is stopping: let deliveries in flight finish for a moment, then cut the
        rest and give their leases back so that another worker sends them at once."""
        self.closing = True
        if self.kicked is not None:
            self.kicked.cancel()
        pending = list(self.tasks.values())
        if pending:
            _, late = await asyncio.wait(pending, timeout=CLOSE_GRACE_SECONDS)
            cut = [item_id for item_id, task in self.tasks.items() if task in late]
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
            with contextlib.suppress(Exception):
                await release(self.runtime.db, cut)
            if cut:
                log.warning("stopping: %d hook delivery(ies) cut short, due again now", len(cut))
        if self._client is not None:
            await self._client.aclose()


def scrubbed(result: HookResult) -> HookResult:
    """The result with its detail scrubbed like an event's error (it is stored, logged, alerted)."""
    return replace(result, detail=scrub(result.detail).strip())


def sender_of(runtime: Runtime) -> Sender:
    sender = runtime.resources.get(RESOURCE)
    if not isinstance(sender, Sender):
        sender = runtime.resources[RESOURCE] = Sender(runtime)
    return sender


async def deliver_due(runtime: Runtime) -> int:
    """Claim what is due and start sending it; how many were started (they finish on their own)."""
    return await sender_of(runtime).start_due()


async def deliver_hooks_job(ctx: dict[str, Any]) -> int:
    """The cron job: one pass, which returns without waiting for the deliveries it started, so a
    slow endpoint never keeps the next tick from claiming what else is due."""
    runtime: Runtime = ctx["runtime"]
    return await sender_of(runtime).run_pass()


async def seconds_until_due(db: Database, settings: Settings) -> float | None:
    """How long until the next pending delivery that is not due yet falls due; None if none.
    (Those due already and not claimed wait for an older one, or for room: the end of a
    delivery starts a pass.)"""
    now = utcnow()
    query = select(func.min(DeliveryRow.next_attempt_at)).where(DeliveryRow.status == DeliveryStatus.PENDING,
                                                                 DeliveryRow.next_attempt_at > now)
    if settings.HOOKS_SIGNING_KEY is None:
        query = query.where(or_(DeliveryRow.target.startswith(PYTHON_PREFIX), DeliveryRow.target == outbox.FAN_OUT))
    async with db.sessions() as session:
        due = await session.scalar(query)
    if due is None:
        return None
    return max(0.0, (due - utcnow()).total_seconds())


def job_timeout(settings: Settings) -> int:
    """Small (arq's in-progress lock on every job lasts the longest function timeout + 10 s)."""
    return int(min(settings.JOB_TIMEOUT_SECONDS, 2 * settings.HOOKS_TIMEOUT_SECONDS + 10))


def cron_jobs(settings: Settings) -> list[Any]:
    return [cron(deliver_hooks_job, name=f"{settings.QUEUE_NAME}:hooks", second=set(range(60)), unique=True,
                 run_at_startup=True, timeout=job_timeout(settings))]
