"""Delivering the hook outbox: claiming due deliveries and recording their outcomes. The passes
(an arq cron job every second, on whichever worker gets the tick) and the sending, each delivery
its own task, are in sender.py.

Each pass claims due `pending` deliveries, sends them (URL hooks through integrations/hooks.py,
Python hooks by calling the registered function), and records the outcome:

- 2xx (or a Python hook that returns): `delivered`;
- a refused URL (private address without HOOKS_ALLOW_PRIVATE_NETWORKS, plain http without
  HOOKS_ALLOW_HTTP, not http(s), malformed): `refused`, never retried;
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
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from integrations.hooks import HookResult
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
                catalog: Catalog | None = None, room: int = BATCH_SIZE,
                busy: Mapping[str, int] | None = None) -> list[Claimed]:
    """Lease up to `room` due deliveries to this worker and count the attempt, at most
    HOOKS_TARGET_CONCURRENCY per target counting the `busy` ones (this process's in flight, by
    target). With the worker's `catalog`, first expand the changes made outside it, in the same
    transaction (one write transaction per pass: on SQLite each one takes the database's write lock)."""
    now = now or utcnow()
    busy = busy or {}
    per_target = settings.HOOKS_TARGET_CONCURRENCY
    lease_until = now + timedelta(seconds=settings.HOOKS_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS)
    query = due_query(now, urls=settings.HOOKS_SIGNING_KEY is not None)
    full = [target for target, n in busy.items() if n >= per_target]
    if full:
        query = query.where(DeliveryRow.target.not_in(full))
    if db.dialect == "postgresql":
        query = query.with_for_update(skip_locked=True, of=DeliveryRow)
    async with db.sessions() as session, session.begin():
        if catalog is not None:
            await _expand(session, db, settings, catalog)
        taken: Counter[str] = Counter(busy)
        rows: list[DeliveryRow] = []
        for row in await session.scalars(query):
            if len(rows) < room and taken[row.target] < per_target:
                taken[row.target] += 1
                rows.append(row)
        for row in rows:
            row.attempts += 1
            row.next_attempt_at = lease_until
        return [Claimed(r.id, r.grant_id, r.target, r.event_type, r.payload, r.attempts, r.created_at)
                for r in rows]


async def release(db: Database, ids: list[str]) -> None:
    """Give back the leases of deliveries this worker claimed and did not finish (it is stopping):
    they are due again now, for any worker. They may have reached the endpoint: same webhook-id."""
    if not ids:
        return
    async with db.sessions() as session, session.begin():
        await session.execute(update(DeliveryRow)
                              .where(DeliveryRow.id.in_(ids), DeliveryRow.status == DeliveryStatus.PENDING)
                              .values(next_attempt_at=utcnow()))


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
