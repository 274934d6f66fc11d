"""Delivering the hook outbox: an arq cron job, every second, on whichever worker gets the tick.

Each pass claims due `pending` deliveries, sends them (URL hooks through integrations/hooks.py,
Python hooks by calling the registered function), and records the outcome:

- 2xx (or a Python hook that returns): `delivered`;
- a refused URL (private address without HOOKS_ALLOW_PRIVATE_NETWORKS, not http(s)): `refused`,
  never retried;
- anything else: tried again after an exponential back-off with jitter
  (HOOKS_RETRY_BASE_SECONDS doubling up to HOOKS_RETRY_MAX_SECONDS), until the delivery is
  HOOKS_GIVE_UP_HOURS old; then `failed`. `dodo-worker hooks retry --failed` puts those back.

Claiming is safe with several workers: on PostgreSQL `FOR UPDATE SKIP LOCKED`, on SQLite the
single writer (`BEGIN IMMEDIATE`). A claim does not hold a transaction while sending: it leases
the row (`next_attempt_at` = now + lease), so a worker that dies mid-send only delays it.
Deliveries of one grant to one target go out in order: a delivery waits while an older one for
the same grant and target is still pending, so `revoked` never overtakes `granted`.

A change made outside the worker (the CLI) left one `outbox.FAN_OUT` row; each claim first
expands those into deliveries with this worker's catalog, HOOKS_SIGNING_KEY and Python hooks,
so who made a change never decides who hears of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from arq.cron import cron
from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from integrations.hooks import HookResult, hook_client, redact, send_hook
from worker import alerts
from worker.entitlements import hooks as python_hooks
from worker.entitlements import outbox
from worker.entitlements.catalog import Catalog
from worker.entitlements.models import DeliveryRow, DeliveryStatus
from worker.retry import backoff_seconds
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import Database
from worker.store.models import utcnow

log = logging.getLogger("dodo_worker.hooks")

BATCH_SIZE = 50
PASS_WINDOW_SECONDS = 0.9  # a pass keeps sending retries that fall due until the next tick
LEASE_MARGIN_SECONDS = 30.0
PYTHON_PREFIX = "python:"


@dataclass(frozen=True)
class Claimed:
    id: str
    grant_id: str
    target: str
    event_type: str
    payload: str
    attempts: int
    created_at: datetime


def due_query(now: datetime, *, urls: bool) -> Any:
    """Pending deliveries whose time has come and that no older pending one (same grant, same
    target) holds back, oldest first."""
    older = aliased(DeliveryRow)
    held_back = exists().where(
        older.grant_id == DeliveryRow.grant_id,
        older.target == DeliveryRow.target,
        older.status == DeliveryStatus.PENDING,
        or_(older.created_at < DeliveryRow.created_at,
            and_(older.created_at == DeliveryRow.created_at, older.id < DeliveryRow.id)),
    )
    older_fan_out = aliased(DeliveryRow)
    fan_out_first = exists().where(  # a change from the CLI, older and not expanded yet
        older_fan_out.grant_id == DeliveryRow.grant_id,
        older_fan_out.target == outbox.FAN_OUT,
        older_fan_out.status == DeliveryStatus.PENDING,
        older_fan_out.created_at < DeliveryRow.created_at,
    )
    query = select(DeliveryRow).where(
        DeliveryRow.status == DeliveryStatus.PENDING,
        DeliveryRow.target != outbox.FAN_OUT,
        or_(DeliveryRow.next_attempt_at.is_(None), DeliveryRow.next_attempt_at <= now),
        ~held_back,
        ~fan_out_first,
    )
    if not urls:  # no HOOKS_SIGNING_KEY: URL hooks wait until one is configured
        query = query.where(DeliveryRow.target.startswith(PYTHON_PREFIX))
    return query.order_by(DeliveryRow.created_at, DeliveryRow.id).limit(BATCH_SIZE)


async def _expand(session: AsyncSession, db: Database, settings: Settings, catalog: Catalog) -> int:
    """Expand up to BATCH_SIZE pending FAN_OUT rows, oldest first, in the caller's transaction,
    which marks them expanded (locked on PostgreSQL, so two workers never expand the same one)."""
    query = (select(DeliveryRow)
             .where(DeliveryRow.target == outbox.FAN_OUT, DeliveryRow.status == DeliveryStatus.PENDING)
             .order_by(DeliveryRow.created_at, DeliveryRow.id).limit(BATCH_SIZE))
    if db.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True)
    rows = list(await session.scalars(query))
    for row in rows:
        written = await outbox.expand(session, settings, catalog, row)
        log.info("hook %s %s for grant %s (changed outside the worker): %d delivery(ies)", row.id,
                 row.event_type, row.grant_id, written)
    return len(rows)


def catalog_of(runtime: Runtime) -> Catalog:
    catalog = runtime.resources.get("catalog")
    return catalog if isinstance(catalog, Catalog) else Catalog.empty()


async def expand_due(runtime: Runtime) -> int:
    """Expand what changes made outside the worker left (see `outbox.expand`); how many."""
    async with runtime.db.sessions() as session, session.begin():
        return await _expand(session, runtime.db, runtime.settings, catalog_of(runtime))


async def claim(db: Database, settings: Settings, now: datetime | None = None,
                catalog: Catalog | None = None) -> list[Claimed]:
    """Lease up to BATCH_SIZE due deliveries to this worker and count the attempt. With the
    worker's `catalog`, first expand the changes made outside it, in the same transaction
    (one write transaction per pass: on SQLite each one takes the database's write lock)."""
    now = now or utcnow()
    lease_until = now + timedelta(seconds=settings.HOOKS_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS)
    query = due_query(now, urls=settings.HOOKS_SIGNING_KEY is not None)
    if db.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True, of=DeliveryRow)
    async with db.sessions() as session, session.begin():
        if catalog is not None:
            await _expand(session, db, settings, catalog)
        rows = list(await session.scalars(query))
        for row in rows:
            row.attempts += 1
            row.next_attempt_at = lease_until
        return [Claimed(r.id, r.grant_id, r.target, r.event_type, r.payload, r.attempts, r.created_at)
                for r in rows]


def grant_of(payload: str) -> dict[str, Any]:
    """The grant in an outbox payload (`{"type": ..., "data": grant}`)."""
    body = json.loads(payload)
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, dict) else body


async def call_python_hook(item: Claimed, seconds: float) -> HookResult:
    func = python_hooks.get(item.target)
    if func is None:
        return HookResult("failed", f"no Python hook {item.target.removeprefix(PYTHON_PREFIX)} in this worker")
    try:
        await asyncio.wait_for(func(item.event_type, grant_of(item.payload)), seconds)
    except TimeoutError:
        return HookResult("failed", f"the hook took longer than {seconds:g}s")
    except Exception as exc:  # a merchant's hook may raise anything; it is retried
        return HookResult("failed", f"{type(exc).__name__}: {exc}"[:300])
    return HookResult("delivered", "returned")


async def record(db: Database, settings: Settings, item: Claimed, result: HookResult) -> str:
    """Store the outcome; returns the delivery's new status (`pending` when it will be retried)."""
    now = utcnow()
    values: dict[str, Any]
    if result.outcome == "delivered":
        values = {"status": DeliveryStatus.DELIVERED, "delivered_at": now, "last_error": None,
                  "next_attempt_at": None}
    elif result.outcome == "refused":
        values = {"status": DeliveryStatus.REFUSED, "last_error": result.detail, "next_attempt_at": None}
    elif now - item.created_at >= timedelta(hours=settings.HOOKS_GIVE_UP_HOURS):
        values = {"status": DeliveryStatus.FAILED, "last_error": result.detail, "next_attempt_at": None}
    else:
        delay = backoff_seconds(item.attempts, settings.HOOKS_RETRY_BASE_SECONDS, settings.HOOKS_RETRY_MAX_SECONDS)
        values = {"last_error": result.detail, "next_attempt_at": now + timedelta(seconds=delay)}
    async with db.sessions() as session, session.begin():
        await session.execute(update(DeliveryRow)
                              .where(DeliveryRow.id == item.id, DeliveryRow.status == DeliveryStatus.PENDING)
                              .values(**values))
    return str(values.get("status", DeliveryStatus.PENDING))


async def deliver_due(runtime: Runtime) -> int:
    """One pass: claim, send concurrently (at most one per grant and target), record."""
    settings = runtime.settings
    items = await claim(runtime.db, settings, catalog=catalog_of(runtime))
    if not items:
        return 0
    secret = settings.HOOKS_SIGNING_KEY.get_secret_value() if settings.HOOKS_SIGNING_KEY else ""
    timeout = settings.HOOKS_TIMEOUT_SECONDS
    # One client per process (loading the CA bundle takes ~20 ms); Runtime.close closes it.
    client = runtime.resources.get("hooks_client")
    if client is None:
        client = runtime.resources["hooks_client"] = hook_client(timeout, settings.HOOKS_ALLOW_PRIVATE_NETWORKS)

    async def one(item: Claimed) -> None:
        if item.target.startswith(PYTHON_PREFIX):
            kind, result = "python", await call_python_hook(item, timeout)
        else:
            kind = "url"
            result = await send_hook(client, item.target, item.payload.encode(), message_id=item.id,
                                     secret=secret, seconds=timeout)
        status = await record(runtime.db, settings, item, result)
        alerts.hook_outcome(runtime, item, status, result.detail)
        runtime.metrics.inc("dodo_hook_deliveries_total", result=status if status != "pending" else "retry",
                            kind=kind)
        where = item.target if kind == "python" else redact(item.target)
        level = logging.INFO if status == DeliveryStatus.DELIVERED else logging.WARNING
        log.log(level, "hook %s %s for grant %s to %s: %s, attempt %d, now %s", item.id, item.event_type,
                item.grant_id, where, result.detail, item.attempts, status)

    await asyncio.gather(*(one(item) for item in items))
    return len(items)


async def deliver_hooks_job(ctx: dict[str, Any]) -> int:
    """The cron job. One pass at a time per worker process: a slow endpoint must not make
    every tick start another pass and fill the worker's job slots."""
    runtime: Runtime = ctx["runtime"]
    lock: asyncio.Lock = runtime.resources.setdefault("hooks_pass_lock", asyncio.Lock())
    if lock.locked():
        return 0
    async with lock:
        loop = asyncio.get_running_loop()
        window_ends = loop.time() + PASS_WINDOW_SECONDS
        total = 0
        while (done := await deliver_due(runtime)) > 0:
            total += done
            # A retry due before the next tick (short back-offs) goes out now, not a second later.
            wait = await seconds_until_due(runtime.db, runtime.settings)
            if wait is None or loop.time() + wait > window_ends:
                break
            await asyncio.sleep(wait)
        return total


async def seconds_until_due(db: Database, settings: Settings) -> float | None:
    """How long until the next pending delivery is due (0 if one is), None if none is pending."""
    query = select(func.min(DeliveryRow.next_attempt_at)).where(DeliveryRow.status == DeliveryStatus.PENDING)
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
