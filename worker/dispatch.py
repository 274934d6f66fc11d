"""Run every matching handler of one event, record each run, and decide what happens next.

Per event: claim it (`processing`, attempts + 1) and mark each handler still owed a run as
`running` with its attempt counted *before* it runs, so a worker killed mid-handler still
uses up an attempt. Each handler then runs in its own transaction, which also records its
success: a handler that succeeded is never run again for this event. Failures are recorded
afterwards. The outcome is `processed`, `ignored`, `dead`, or `retry` after a back-off.
"""

from __future__ import annotations

import json
import time
import traceback
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from worker.context import Context
from worker.events import Event
from worker.logs import event_logger
from worker.registry import Handler
from worker.retry import backoff_seconds
from worker.runtime import Runtime
from worker.store import EventRow, EventSource, EventStatus, HandlerRunRow, RunStatus
from worker.store.models import utcnow

MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class Outcome:
    status: str  # processed, ignored, dead, retry, skipped
    retry_in: float | None = None


@dataclass
class _Claim:
    row: EventRow
    handlers: list[Handler]
    to_run: list[Handler]
    attempts: dict[str, int]
    dead: list[str]  # handlers out of attempts already (crashed during their last one)
    earlier_dead: bool  # a run was dead before this try (it waits for `events replay`)
    first_attempt: bool


async def process_event(runtime: Runtime, event_id: str) -> Outcome:
    log = event_logger(event_id)
    claim = await _claim(runtime, event_id)
    if claim is None:
        return Outcome("skipped")
    row = claim.row
    if claim.first_attempt:
        lag = (utcnow() - row.received_at).total_seconds()
        runtime.metrics.observe("dodo_queue_lag_seconds", max(0.0, lag))

    if not claim.handlers:  # settled as `ignored` by the claim itself
        runtime.metrics.inc("dodo_events_ignored_total", type=row.type)
        log.info("%s ignored: %s", row.type, row.last_error or "no handler for this type")
        return Outcome("ignored")

    try:
        envelope = json.loads(row.body)
    except ValueError:
        envelope = {"type": row.type}
    event = Event.from_envelope(event_id, envelope if isinstance(envelope, dict) else {"type": row.type},
                                source=row.source)

    max_attempts = runtime.settings.MAX_ATTEMPTS
    failed: dict[str, int] = {}
    settled = False
    for index, handler in enumerate(claim.to_run):
        # The last handler's transaction also settles the event when everything else went well:
        # one commit fewer per event, and "processed" lands atomically with the last success.
        last = index == len(claim.to_run) - 1
        settle = last and not failed and not claim.dead and not claim.earlier_dead
        error = await _run_handler(runtime, event, handler, claim.attempts[handler.name], settle=settle)
        if error is not None:
            failed[handler.name] = claim.attempts[handler.name]
            runtime.metrics.inc("dodo_handler_failures_total", handler=handler.name)
            event_logger(event_id, handler.name).warning(
                "attempt %d/%d failed: %s", claim.attempts[handler.name], max_attempts, error.splitlines()[-1]
            )
        elif settle:
            settled = True

    retriable = {name: n for name, n in failed.items() if n < max_attempts}
    dead = sorted(name for name, n in failed.items() if n >= max_attempts) + claim.dead
    if retriable:
        delay = backoff_seconds(min(retriable.values()), runtime.settings.RETRY_BASE_SECONDS,
                                runtime.settings.RETRY_MAX_SECONDS)
        await _settle(runtime, event_id, EventStatus.FAILED, retry_in=delay,
                      error=f"{len(retriable)} handler(s) failed: {', '.join(sorted(retriable))}")
        log.info("%s: retrying %s in %.2fs", row.type, ", ".join(sorted(retriable)), delay)
        return Outcome("retry", retry_in=delay)
    if dead or claim.earlier_dead:
        await _settle(runtime, event_id, EventStatus.DEAD, error=f"out of attempts: {', '.join(dead)}")
        runtime.metrics.inc("dodo_events_dead_total", type=row.type)
        log.error("%s is dead after %d attempts (%s); fix and run `dodo-worker events replay %s`",
                  row.type, max_attempts, ", ".join(dead), event_id)
        return Outcome("dead")
    if not settled:  # nothing was left to run (every handler had succeeded before)
        await _settle(runtime, event_id, EventStatus.PROCESSED)
    runtime.metrics.inc("dodo_events_processed_total", type=row.type)
    log.info("%s processed by %s", row.type, ", ".join(h.name for h in claim.handlers))
    return Outcome("processed")


async def _claim(runtime: Runtime, event_id: str) -> _Claim | None:
    """In one transaction: take the event (`processing`, attempts + 1), or settle it as `ignored`
    when no handler matches; count an attempt on every run still owed (marked `running` before
    it runs, so a worker killed mid-handler still uses it up); mark dead the runs whose worker
    died during their last attempt."""
    now = utcnow()
    async with runtime.db.sessions() as session, session.begin():
        row = await session.get(EventRow, event_id, with_for_update=True)
        if row is None:
            event_logger(event_id).warning("not in the inbox; nothing to do")
            return None
        if row.status in EventStatus.SETTLED:
            return None
        first_attempt = row.attempts == 0
        row.attempts += 1
        row.updated_at = now
        handlers = runtime.registry.handlers_for(row.type)
        if not handlers:
            row.status = EventStatus.IGNORED
            row.processed_at = now
            row.next_attempt_at = None
            row.last_error = None
            return _Claim(row, [], [], {}, [], False, first_attempt)
        twin = await _handled_twin(session, row) if first_attempt else None
        if twin is not None:
            row.status = EventStatus.IGNORED
            row.processed_at = now
            row.next_attempt_at = None
            row.last_error = f"already handled as event {twin}"
            return _Claim(row, [], [], {}, [], False, first_attempt)
        row.status = EventStatus.PROCESSING
        runs: dict[str, HandlerRunRow] = {}
        if not first_attempt:  # runs are only ever created here, so a first claim finds none
            result = await session.scalars(select(HandlerRunRow).where(HandlerRunRow.event_id == event_id))
            runs = {run.handler: run for run in result}
        # Succeeded runs are done for good; dead ones wait for `events replay`.
        owed = [h for h in handlers if runs.get(h.name) is None
                or runs[h.name].status in (RunStatus.RUNNING, RunStatus.FAILED)]
        max_attempts = runtime.settings.MAX_ATTEMPTS
        # A run still marked `running` from an earlier try means that worker died mid-handler.
        crashed_out = [h for h in owed if runs.get(h.name) is not None and runs[h.name].attempts >= max_attempts]
        to_run = [h for h in owed if h not in crashed_out]
        earlier_dead = any(run.status == RunStatus.DEAD for run in runs.values())
        attempts: dict[str, int] = {}
        for handler in to_run:
            existing = runs.get(handler.name)
            if existing is None:
                session.add(HandlerRunRow(event_id=event_id, handler=handler.name, status=RunStatus.RUNNING,
                                          attempts=1, started_at=now))
                attempts[handler.name] = 1
            else:
                attempts[handler.name] = existing.attempts + 1
                existing.status, existing.attempts, existing.started_at = RunStatus.RUNNING, attempts[handler.name], now
        for handler in crashed_out:
            run = runs[handler.name]
            run.status, run.last_error, run.finished_at = (RunStatus.DEAD, "worker stopped during the last attempt",
                                                           now)
        await session.flush()
        session.expunge_all()
    return _Claim(row, handlers, to_run, attempts, [h.name for h in crashed_out], earlier_dead, first_attempt)


# Types that happen once per object: the ones reconciliation injects when a webhook went missing.
ONCE_PER_OBJECT = frozenset({"payment.succeeded", "refund.succeeded", "dispute.lost"})


async def _handled_twin(session: AsyncSession, row: EventRow) -> str | None:
    """The id of an event already processed for the same object and type, when one of the two
    came from reconciliation: a webhook that arrives after its repair (or a repair that raced
    its webhook) is the same news, and the merchant's handlers should not hear it twice."""
    if row.type not in ONCE_PER_OBJECT or not row.object_id:
        return None
    query = select(EventRow.id).where(
        EventRow.type == row.type, EventRow.object_id == row.object_id, EventRow.id != row.id,
        EventRow.status == EventStatus.PROCESSED,
    ).limit(1)
    if row.source != EventSource.RECONCILE:
        query = query.where(EventRow.source == EventSource.RECONCILE)
    return await session.scalar(query)


async def _run_handler(runtime: Runtime, event: Event, handler: Handler, attempt: int, *,
                       settle: bool = False) -> str | None:
    """Run one handler; None on success, else the error text (recorded on the run). With
    `settle`, its success also marks the event `processed`, in the same transaction."""
    started = time.perf_counter()
    error: str | None = None
    try:
        async with runtime.db.sessions() as session, session.begin():
            ctx = Context(session=session, settings=runtime.settings,
                          log=event_logger(event.id, handler.name), event_id=event.id,
                          handler=handler.name, attempt=attempt, resources=runtime.resources)
            await handler.func(event, ctx)
            elapsed = time.perf_counter() - started
            await session.execute(_RUN_UPDATE, {
                "b_event_id": event.id, "b_handler": handler.name, "status": RunStatus.SUCCEEDED,
                "duration_ms": elapsed * 1000, "finished_at": utcnow(), "last_error": None})
            if settle:
                await session.execute(_EVENT_UPDATE, {"b_id": event.id,
                                                        **_settled_values(EventStatus.PROCESSED)})
    except Exception as exc:  # a handler may raise anything; it is recorded and retried
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip() or type(exc).__name__
        detail = traceback.format_exc()[-MAX_ERROR_CHARS:]
        elapsed = time.perf_counter() - started
        status = RunStatus.DEAD if attempt >= runtime.settings.MAX_ATTEMPTS else RunStatus.FAILED
        async with runtime.db.sessions() as session, session.begin():
            await session.execute(_RUN_UPDATE, {
                "b_event_id": event.id, "b_handler": handler.name, "status": status,
                "duration_ms": elapsed * 1000, "finished_at": utcnow(), "last_error": detail})
    runtime.metrics.observe("dodo_handler_duration_seconds", elapsed, handler=handler.name)
    return error


# Built once: Core statements with the values as parameters (no ORM bulk-update bookkeeping, no
# new statement and cache key per event).
_RUNS: Any = HandlerRunRow.__table__
_RUN_UPDATE = update(_RUNS).where(_RUNS.c.event_id == bindparam("b_event_id"),
                                  _RUNS.c.handler == bindparam("b_handler"))
_EVENTS: Any = EventRow.__table__
_EVENT_UPDATE = update(_EVENTS).where(_EVENTS.c.id == bindparam("b_id"))


def _settled_values(status: str, *, retry_in: float | None = None, error: str | None = None) -> dict[str, Any]:
    now = utcnow()
    values: dict[str, Any] = {"status": status, "updated_at": now, "last_error": error}
    if status in (EventStatus.PROCESSED, EventStatus.IGNORED):
        values["processed_at"] = now
        values["next_attempt_at"] = None
    if retry_in is not None:
        values["next_attempt_at"] = now + timedelta(seconds=retry_in)
    return values


async def _settle(runtime: Runtime, event_id: str, status: str, *, retry_in: float | None = None,
                  error: str | None = None) -> None:
    values = _settled_values(status, retry_in=retry_in, error=error)
    async with runtime.db.sessions() as session, session.begin():
        await session.execute(_EVENT_UPDATE, {"b_id": event_id, **values})
