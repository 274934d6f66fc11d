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
from typing import Any

from sqlalchemy import select, update

from worker.context import Context
from worker.events import Event
from worker.logs import event_logger
from worker.registry import Handler
from worker.retry import backoff_seconds
from worker.runtime import Runtime
from worker.store import EventRow, EventStatus, HandlerRunRow, RunStatus
from worker.store.models import utcnow

MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class Outcome:
    status: str  # processed, ignored, dead, retry, skipped
    retry_in: float | None = None


async def process_event(runtime: Runtime, event_id: str) -> Outcome:
    log = event_logger(event_id)
    claimed = await _claim(runtime, event_id)
    if claimed is None:
        return Outcome("skipped")
    row, runs, first_attempt = claimed
    if first_attempt:
        lag = (utcnow() - row.received_at).total_seconds()
        runtime.metrics.observe("dodo_queue_lag_seconds", max(0.0, lag))

    handlers = runtime.registry.handlers_for(row.type)
    if not handlers:
        await _settle(runtime, event_id, EventStatus.IGNORED)
        runtime.metrics.inc("dodo_events_ignored_total", type=row.type)
        log.info("%s ignored: no handler for this type", row.type)
        return Outcome("ignored")

    # Succeeded runs are done for good; dead ones wait for `events replay`.
    owed = [h for h in handlers if runs.get(h.name) is None
            or runs[h.name].status in (RunStatus.RUNNING, RunStatus.FAILED)]
    max_attempts = runtime.settings.MAX_ATTEMPTS
    # A run still marked `running` from an earlier try means that worker died mid-handler.
    crashed_out = [h for h in owed if runs.get(h.name) is not None and runs[h.name].attempts >= max_attempts]
    to_run = [h for h in owed if h not in crashed_out]
    attempts = await _start_runs(runtime, event_id, to_run, runs)
    await _mark_dead(runtime, event_id, crashed_out, "worker stopped during the last attempt")

    try:
        envelope = json.loads(row.body)
    except ValueError:
        envelope = {"type": row.type}
    event = Event.from_envelope(event_id, envelope if isinstance(envelope, dict) else {"type": row.type},
                                source=row.source)

    failed: dict[str, int] = {}
    for handler in to_run:
        error = await _run_handler(runtime, event, handler, attempts[handler.name])
        if error is not None:
            failed[handler.name] = attempts[handler.name]
            runtime.metrics.inc("dodo_handler_failures_total", handler=handler.name)
            event_logger(event_id, handler.name).warning(
                "attempt %d/%d failed: %s", attempts[handler.name], max_attempts, error.splitlines()[-1]
            )

    retriable = {name: n for name, n in failed.items() if n < max_attempts}
    dead = sorted(name for name, n in failed.items() if n >= max_attempts)
    dead += [h.name for h in crashed_out]
    if retriable:
        delay = backoff_seconds(min(retriable.values()), runtime.settings.RETRY_BASE_SECONDS,
                                runtime.settings.RETRY_MAX_SECONDS)
        await _settle(runtime, event_id, EventStatus.FAILED, retry_in=delay,
                      error=f"{len(retriable)} handler(s) failed: {', '.join(sorted(retriable))}")
        log.info("%s: retrying %s in %.2fs", row.type, ", ".join(sorted(retriable)), delay)
        return Outcome("retry", retry_in=delay)
    if dead or await _has_dead_runs(runtime, event_id):
        await _settle(runtime, event_id, EventStatus.DEAD, error=f"out of attempts: {', '.join(dead)}")
        runtime.metrics.inc("dodo_events_dead_total", type=row.type)
        log.error("%s is dead after %d attempts (%s); fix and run `dodo-worker events replay %s`",
                  row.type, max_attempts, ", ".join(dead), event_id)
        return Outcome("dead")
    await _settle(runtime, event_id, EventStatus.PROCESSED)
    runtime.metrics.inc("dodo_events_processed_total", type=row.type)
    log.info("%s processed by %s", row.type, ", ".join(h.name for h in handlers))
    return Outcome("processed")


async def _claim(runtime: Runtime, event_id: str) -> tuple[EventRow, dict[str, HandlerRunRow], bool] | None:
    async with runtime.db.sessions() as session, session.begin():
        row = await session.get(EventRow, event_id, with_for_update=True)
        if row is None:
            event_logger(event_id).warning("not in the inbox; nothing to do")
            return None
        if row.status in EventStatus.SETTLED:
            return None
        first_attempt = row.attempts == 0
        row.status = EventStatus.PROCESSING
        row.attempts += 1
        row.updated_at = utcnow()
        result = await session.scalars(select(HandlerRunRow).where(HandlerRunRow.event_id == event_id))
        runs = {run.handler: run for run in result}
        session.expunge_all()
    return row, runs, first_attempt


async def _start_runs(
    runtime: Runtime, event_id: str, handlers: list[Handler], runs: dict[str, HandlerRunRow]
) -> dict[str, int]:
    attempts: dict[str, int] = {}
    now = utcnow()
    async with runtime.db.sessions() as session, session.begin():
        for handler in handlers:
            existing = runs.get(handler.name)
            if existing is None:
                session.add(HandlerRunRow(event_id=event_id, handler=handler.name, status=RunStatus.RUNNING,
                                          attempts=1, started_at=now))
                attempts[handler.name] = 1
            else:
                attempts[handler.name] = existing.attempts + 1
                await session.execute(
                    update(HandlerRunRow)
                    .where(HandlerRunRow.id == existing.id)
                    .values(status=RunStatus.RUNNING, attempts=attempts[handler.name], started_at=now)
                )
    return attempts


async def _run_handler(runtime: Runtime, event: Event, handler: Handler, attempt: int) -> str | None:
    """Run one handler; None on success, else the error text (recorded on the run)."""
    started = time.perf_counter()
    error: str | None = None
    try:
        async with runtime.db.sessions() as session, session.begin():
            ctx = Context(session=session, settings=runtime.settings,
                          log=event_logger(event.id, handler.name), event_id=event.id,
                          handler=handler.name, attempt=attempt, resources=runtime.resources)
            await handler.func(event, ctx)
            elapsed = time.perf_counter() - started
            await session.execute(
                update(HandlerRunRow)
                .where(HandlerRunRow.event_id == event.id, HandlerRunRow.handler == handler.name)
                .values(status=RunStatus.SUCCEEDED, duration_ms=elapsed * 1000, finished_at=utcnow(),
                        last_error=None)
            )
    except Exception as exc:  # a handler may raise anything; it is recorded and retried
        error = "".join(traceback.format_exception_only(type(exc), exc)).strip() or type(exc).__name__
        detail = traceback.format_exc()[-MAX_ERROR_CHARS:]
        elapsed = time.perf_counter() - started
        status = RunStatus.DEAD if attempt >= runtime.settings.MAX_ATTEMPTS else RunStatus.FAILED
        async with runtime.db.sessions() as session, session.begin():
            await session.execute(
                update(HandlerRunRow)
                .where(HandlerRunRow.event_id == event.id, HandlerRunRow.handler == handler.name)
                .values(status=status, duration_ms=elapsed * 1000, finished_at=utcnow(), last_error=detail)
            )
    runtime.metrics.observe("dodo_handler_duration_seconds", elapsed, handler=handler.name)
    return error


async def _mark_dead(runtime: Runtime, event_id: str, handlers: list[Handler], reason: str) -> None:
    if not handlers:
        return
    async with runtime.db.sessions() as session, session.begin():
        await session.execute(
            update(HandlerRunRow)
            .where(HandlerRunRow.event_id == event_id, HandlerRunRow.handler.in_([h.name for h in handlers]))
            .values(status=RunStatus.DEAD, last_error=reason, finished_at=utcnow())
        )


async def _has_dead_runs(runtime: Runtime, event_id: str) -> bool:
    async with runtime.db.sessions() as session:
        found = await session.scalar(
            select(HandlerRunRow.id).where(HandlerRunRow.event_id == event_id,
                                           HandlerRunRow.status == RunStatus.DEAD).limit(1)
        )
    return found is not None


async def _settle(runtime: Runtime, event_id: str, status: str, *, retry_in: float | None = None,
                  error: str | None = None) -> None:
    now = utcnow()
    values: dict[str, Any] = {"status": status, "updated_at": now, "last_error": error}
    if status in (EventStatus.PROCESSED, EventStatus.IGNORED):
        values["processed_at"] = now
        values["next_attempt_at"] = None
    if retry_in is not None:
        from datetime import timedelta

        values["next_attempt_at"] = now + timedelta(seconds=retry_in)
    async with runtime.db.sessions() as session, session.begin():
        await session.execute(update(EventRow).where(EventRow.id == event_id).values(**values))
