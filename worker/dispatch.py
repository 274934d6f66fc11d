"""Run every matching handler of one event, record each run, and decide what happens next.

Per event: claim it (`processing`, attempts + 1) and mark each handler still owed a run as
`running` with its attempt counted *before* it runs, so a worker killed mid-handler still
uses up an attempt. Each handler then runs in a transaction which also records its success: a
handler that succeeded is never run again for this event. Failures are recorded too. The
outcome is `processed`, `ignored`, `dead`, or `retry` after a back-off.

Under load the worker batches (worker/coalesce.py): the events that arrive while a batch runs
are claimed together in one transaction, and their handlers registered with
`@on(..., batched=True)` (the built-in entitlement handlers) run in one more, with one commit.
If one of those raises, that transaction is rolled back and each event's batched handlers run
again on their own. Other handlers run afterwards in their own transactions, concurrently.

Every attempt that ends also adds a row to `handler_attempts`, in the transaction that records
it (a batch's in one INSERT): the run's history, which retries and replays add to and never
erase. An attempt cut short by a dead worker is added by the next claim, as `interrupted`.
An arq job carries one event or many (`process_events`); the claim's lease keeps two jobs off one
event (`_claim_rows`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import and_, bindparam, case, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from worker import alerts
from worker.coalesce import Coalescer
from worker.context import Context
from worker.errors import PermanentError
from worker.events import Event
from worker.logs import EventLogger, event_logger
from worker.registry import RESOURCES, Handler
from worker.retry import backoff_seconds
from worker.runtime import Runtime
from worker.scrub import scrub
from worker.store import EventRow, EventSource, EventStatus, HandlerRunRow, RunStatus, inbox
from worker.store.models import INTERRUPTED_ERROR, AttemptStatus, HandlerAttemptRow, utcnow

MAX_ERROR_CHARS = 4000
MAX_MESSAGE_CHARS = 1000  # of the exception's own line(s), within MAX_ERROR_CHARS

log = logging.getLogger("dodo_worker.dispatch")


QUARANTINE_ERROR = "quarantined: the worker processing it died or stalled {n} times; see the logs"


class LeaseLost(Exception):
    """The event's lease is no longer this claim's (it ran out and another worker took the
    event): nothing of this run is kept, the new owner settles the event."""


@dataclass(frozen=True)
class Failure:
    """A handler's failed attempt: its error line(s), and whether retrying could help."""

    text: str
    permanent: bool = False  # a PermanentError: dead at once


@dataclass(frozen=True)
class Outcome:
    status: str  # processed, ignored, dead, retry, skipped
    retry_in: float | None = None


@dataclass
class _Claim:
    row: _Claimed
    handlers: list[Handler]
    to_run: list[Handler]
    attempts: dict[str, int]
    dead: list[str]  # handlers out of attempts already (crashed during their last one)
    earlier_dead: bool  # a run was dead before this try (it waits for `events replay`)
    first_attempt: bool
    token: str  # the claim's lease token, checked by every settle (fencing)
    quarantined: bool = False  # settled `dead` by the claim: its leases ran out too often

    @property
    def clean(self) -> bool:
        """Nothing is dead, so success may settle the event as `processed`."""
        return not self.dead and not self.earlier_dead


async def process_events(runtime: Runtime, event_ids: list[str]) -> list[Outcome | BaseException]:
    """Process several events at once (one arq job's worth): their claims and batched handlers
    share the worker's batches. One outcome per event, or the error that stopped it (the sweeper
    takes that event up again).

    When the worker is stopping and cuts this short, the leases of the events it had claimed are
    given back first (`release_leases`), so that arq's re-run of the job, which starts as soon as
    this returns, finds them free instead of waiting for the lease to expire."""
    try:
        return await asyncio.gather(*(process_event(runtime, event_id) for event_id in event_ids),
                                    return_exceptions=True)
    except asyncio.CancelledError:
        if runtime.stopping:
            await asyncio.shield(release_leases(runtime))
        raise


async def release_leases(runtime: Runtime) -> None:
    """Give back every lease this stopping process holds (once, whichever cut job asks first)."""
    if runtime.releasing is None:
        runtime.releasing = asyncio.ensure_future(_release_all(runtime))
    await runtime.releasing


async def _release_all(runtime: Runtime) -> None:
    """Stop the batches, then end the lease (`next_attempt_at` = now) of each event this process
    claimed that is still `processing` under it. The next claim takes the event as a crashed run,
    as after a SIGKILL, without waiting; if Redis lost the job, the sweeper queues the event again
    on its next round. Only for a stopping process: every job of it is being cut."""
    coalescer = runtime.coalescers.pop("events", None)
    if coalescer is not None:
        await coalescer.close()
    now = utcnow()
    held = [{"b_id": event_id, "b_token": token, "b_now": now} for event_id, token in runtime.leases.items()]
    runtime.leases.clear()
    if not held:
        return
    try:
        async with runtime.db.sessions() as session, session.begin():
            await session.execute(_LEASE_RELEASE, held)
    except Exception as exc:  # the database went away too: the leases expire by themselves
        log.warning("could not give back %d lease(s): %s", len(held), _error_text(exc))


async def events_with_plain_handlers(runtime: Runtime, event_ids: list[str]) -> list[str]:
    """The events among these that a handler without `batched` will run for (none without a query
    when every handler is batched). Such a handler holds a database connection and may take long,
    so its events go one arq job each (`WORKER_CONCURRENCY` at a time, each within its own job
    timeout), as every event did before jobs carried many: a job of fifty would claim them all at
    once, and its time limit would have to cover fifty slow handlers."""
    if all(handler.batched for handler in runtime.registry) or not event_ids:
        return []
    async with runtime.db.sessions() as session:
        rows = (await session.execute(_TYPES_SELECT, {"ids": event_ids})).all()
    return [event_id for event_id, event_type in rows
            if any(not handler.batched for handler in runtime.registry.handlers_for(event_type))]


async def process_event(runtime: Runtime, event_id: str) -> Outcome:
    """One event, from its claim to its outcome."""
    log = event_logger(event_id)
    skipped = False
    try:
        step = await _coalescer(runtime).submit(event_id)
        if step is None:
            skipped = True
            return Outcome("skipped")
        return await _finish(runtime, step, log)
    except LeaseLost:
        log.warning("its lease ran out while this worker ran it (a stall, or the database was "
                    "unreachable): another worker took it over; this run is dropped")
        return Outcome("lost")
    finally:
        task = asyncio.current_task()
        cut_by_stop = runtime.stopping and task is not None and task.cancelling() > 0
        # A skipped event's lease is another call's; a stopping worker gives its leases back.
        if not skipped and not cut_by_stop:
            runtime.leases.pop(event_id, None)


async def _finish(runtime: Runtime, step: _Step, log: EventLogger) -> Outcome:
    """The rest of an event after its claim and batched handlers: its other handlers (within its
    lease: past it another worker may take the event), then its outcome."""
    claim, event = step.claim, step.event
    event_id = claim.row.id
    row = claim.row
    if claim.first_attempt:
        lag = (utcnow() - row.received_at).total_seconds()
        runtime.metrics.observe("dodo_queue_lag_seconds", max(0.0, lag))

    if claim.quarantined:
        runtime.metrics.inc("dodo_events_dead_total", type=row.type)
        log.error("%s %s; run `dodo-worker events replay %s` once fixed", row.type, row.last_error, event_id)
        return Outcome("dead")
    if event is None:  # settled as `ignored` by the claim itself
        runtime.metrics.inc("dodo_events_ignored_total", type=row.type)
        log.info("%s ignored: %s", row.type, row.last_error or "no handler for this type")
        return Outcome("ignored")

    if step.batched.crash is not None:  # as if the handlers had run in this job: the sweeper retries
        raise step.batched.crash  # (LeaseLost included: process_event drops the run)
    max_attempts = runtime.settings.MAX_ATTEMPTS
    failed: dict[str, int] = {}
    errors = dict(step.batched.errors)
    settled = step.batched.settled
    alone = [h for h in claim.to_run if not h.batched]
    if alone:
        async with asyncio.timeout_at(step.deadline):
            for index, handler in enumerate(alone):
                # The last handler's transaction also settles the event when everything else went
                # well: one commit fewer per event, and "processed" lands atomically with it.
                settle = index == len(alone) - 1 and not errors and claim.clean
                error = await _run_handler(runtime, event, handler, claim.attempts[handler.name], claim.token,
                                           settle=settle)
                if error is not None:
                    errors[handler.name] = error
                elif settle:
                    settled = True
    permanent: list[str] = []
    for name, error in errors.items():
        failed[name] = max_attempts if error.permanent else claim.attempts[name]
        runtime.metrics.inc("dodo_handler_failures_total", handler=name)
        event_logger(event_id, name).warning(
            "attempt %d/%d failed%s: %s", claim.attempts[name], max_attempts,
            " for good" if error.permanent else "", error.text.splitlines()[-1])
        if error.permanent:
            permanent.append(f"{name}: {error.text.splitlines()[-1]}")

    retriable = {name: n for name, n in failed.items() if n < max_attempts}
    dead = sorted(name for name, n in failed.items() if n >= max_attempts) + claim.dead
    if retriable:
        delay = backoff_seconds(min(retriable.values()), runtime.settings.RETRY_BASE_SECONDS,
                                runtime.settings.RETRY_MAX_SECONDS)
        await _settle(runtime, claim, EventStatus.FAILED, retry_in=delay,
                      error=f"{len(retriable)} handler(s) failed: {', '.join(sorted(retriable))}")
        log.info("%s: retrying %s in %.2fs", row.type, ", ".join(sorted(retriable)), delay)
        return Outcome("retry", retry_in=delay)
    if dead or claim.earlier_dead:
        out_of_attempts = [name for name in dead if name not in {p.split(": ", 1)[0] for p in permanent}]
        reasons = [f"permanent failure in {p}" for p in permanent]
        if out_of_attempts or not reasons:
            reasons.append(f"out of attempts: {', '.join(out_of_attempts)}")
        reason = "; ".join(reasons)[:MAX_ERROR_CHARS]
        await _settle(runtime, claim, EventStatus.DEAD, error=reason)
        runtime.metrics.inc("dodo_events_dead_total", type=row.type)
        alerts.event_dead(runtime, event_id, row.type, dead, {name: f.text for name, f in errors.items()})
        log.error("%s is dead (%s); fix and run `dodo-worker events replay %s`", row.type, reason, event_id)
        return Outcome("dead")
    if not settled:  # nothing was left to run (every handler had succeeded before)
        await _settle(runtime, claim, EventStatus.PROCESSED)
    runtime.metrics.inc("dodo_events_processed_total", type=row.type)
    log.info("%s processed by %s", row.type, ", ".join(h.name for h in claim.handlers))
    return Outcome("processed")


def _coalescer(runtime: Runtime) -> Coalescer[str, _Step | None]:
    """The worker's batcher of events (one per runtime). One batch runs at a time and the events
    that arrive meanwhile make the next one bigger: the worker is CPU-bound under load, and on
    PostgreSQL at 200 events/s two batches at once (smaller, so more statements per event) gave
    a p50 of 0.5 s against 0.07 to 0.2 s for one (docs/operations.md)."""
    coalescer = runtime.coalescers.get("events")
    if coalescer is None:
        coalescer = Coalescer(partial(_claim_and_run, runtime), max_size=runtime.settings.WORKER_BATCH_SIZE)
        runtime.coalescers["events"] = coalescer
    return coalescer


@dataclass(frozen=True)
class _Step:
    """An event claimed, and its batched handlers run (if it has any)."""

    claim: _Claim
    event: Event | None  # None: settled by the claim (`ignored`)
    batched: _BatchResult
    deadline: float  # the event loop's time when its lease runs out


async def _claim_and_run(runtime: Runtime, event_ids: list[str]) -> list[_Step | None]:
    """Claim the events in one transaction, then run their batched handlers in another, on one
    connection (each checkout from the pool costs a ping, a round trip)."""
    async with runtime.db.engine.connect() as connection:
        return await _claim_and_run_on(runtime, connection, event_ids)


async def _claim_and_run_on(runtime: Runtime, connection: AsyncConnection, event_ids: list[str]) -> list[_Step | None]:
    steps: list[_Step | None] = []
    items: list[_BatchItem] = []
    seen: set[str] = set()
    deadline = asyncio.get_running_loop().time() + runtime.settings.JOB_TIMEOUT_SECONDS  # before the lease
    for event_id, claim in zip(event_ids, await _claim_many(runtime, connection, event_ids), strict=True):
        if claim is None or event_id in seen:  # an id twice in one batch runs once
            steps.append(None)
            continue
        seen.add(event_id)
        event = _event_of(claim) if claim.handlers else None
        batched = [h for h in claim.to_run if h.batched]
        result = _BatchResult()
        if event is not None and batched:
            # The batch also settles the event when nothing else is left to run.
            settle = claim.clean and len(batched) == len(claim.to_run)
            items.append(_BatchItem(event, batched, claim.attempts, settle, result, claim.token))
        steps.append(_Step(claim, event, result, deadline))
    if items:
        async with asyncio.timeout_at(deadline):  # never past the leases
            await _run_batch(runtime, connection, items)
    return steps


def _event_of(claim: _Claim) -> Event:
    row = claim.row
    try:
        envelope = json.loads(row.body)
    except ValueError:
        envelope = {"type": row.type}
    return Event.from_envelope(row.id, envelope if isinstance(envelope, dict) else {"type": row.type},
                               source=row.source)


@dataclass(frozen=True)
class _Claimed:
    """What processing needs of an event's inbox row."""

    id: str
    type: str
    source: str
    body: str
    received_at: datetime
    last_error: str | None


async def _claim_many(runtime: Runtime, connection: AsyncConnection, event_ids: list[str]) -> list[_Claim | None]:
    """Claim several events in one transaction (see `_claim_rows`); None for an event that is
    missing, settled, leased by another job or waiting for its retry. Rows are locked in id
    order, so two batches never deadlock."""
    async with _session(runtime, connection) as session, session.begin():
        found = (await session.execute(_CLAIM_SELECT, {"ids": sorted(set(event_ids))})).mappings().all()
        rows = {row["id"]: row for row in found}
        claims, _ = await _claim_rows(runtime, session, rows)
    for event_id, claim in claims.items():
        if claim.handlers and not claim.quarantined:
            runtime.leases[event_id] = claim.token
    for event_id in event_ids:
        if event_id not in rows:
            event_logger(event_id).warning("not in the inbox; nothing to do")
    return [claims.get(event_id) for event_id in event_ids]


def _waiting(row: Any, now: datetime) -> bool:
    """Not to be claimed yet: another worker holds its lease (a `processing` row whose lease ran
    out, or that has none, is a run whose worker died), or its retry is not due (an event can sit
    in two jobs, and the other one must not skip the back-off)."""
    due = row["next_attempt_at"]
    return row["status"] in (EventStatus.PROCESSING, EventStatus.FAILED) and due is not None and due > now


async def _claim_rows(runtime: Runtime, session: AsyncSession,
                      rows: dict[str, Any]) -> tuple[dict[str, _Claim], datetime]:
    """Per event not yet settled nor leased: take it (`processing` with a lease, attempts + 1), or
    settle it as `ignored` when no handler matches or reconciliation already handled its object;
    count an attempt on every run still owed (marked `running` before it runs, so a worker killed
    mid-handler still uses it up); mark dead the runs whose worker died during their last attempt.

    The lease (`next_attempt_at` of a `processing` row, held by `lease_token`) is what keeps two
    workers off one event: a job carries many events, so arq's one-job-per-id rule no longer does.
    It lasts LEASE_SECONDS and the worker's heartbeat renews it while the worker lives
    (worker/leases.py), so a dead worker's events are taken over within seconds. A `processing`
    row whose lease ran out under a token is a lost lease: after QUARANTINE_AFTER_LOST_LEASES in
    a row the event is settled `dead` (quarantined) instead of taking one more worker down."""
    now = utcnow()
    lease_until = now + timedelta(seconds=runtime.settings.LEASE_SECONDS)
    token = uuid.uuid4().hex
    quarantine_after = runtime.settings.QUARANTINE_AFTER_LOST_LEASES
    max_attempts = runtime.settings.MAX_ATTEMPTS
    live = {event_id: row for event_id, row in rows.items()
            if row["status"] not in EventStatus.SETTLED and not _waiting(row, now)}
    for event_id in rows.keys() - live.keys():
        if rows[event_id]["status"] not in EventStatus.SETTLED:
            event_logger(event_id).debug("%s until %s; skipped", rows[event_id]["status"],
                                         rows[event_id]["next_attempt_at"])
    # Runs are only ever created by a claim, so an event never claimed before has none.
    runs: dict[str, dict[str, Any]] = {event_id: {} for event_id in live}
    retried = [event_id for event_id, row in live.items() if row["attempts"] > 0]
    if retried:
        for run in (await session.execute(_RUNS_SELECT, {"ids": retried})).mappings():
            runs[run["event_id"]][run["handler"]] = run

    claims: dict[str, _Claim] = {}
    event_updates: list[dict[str, Any]] = []
    run_inserts: list[dict[str, Any]] = []
    run_updates: list[dict[str, Any]] = []
    interrupted: list[dict[str, Any]] = []
    for event_id, row in live.items():
        first_attempt = row["attempts"] == 0
        lost = row["status"] == EventStatus.PROCESSING and row["lease_token"] is not None
        update = {"b_id": event_id, "attempts": row["attempts"] + 1, "updated_at": now,
                  "status": EventStatus.PROCESSING, "processed_at": row["processed_at"],
                  "next_attempt_at": lease_until, "last_error": row["last_error"], "lease_token": token,
                  "lost_leases": row["lost_leases"] + (1 if lost else 0)}
        event_updates.append(update)
        handlers = runtime.registry.handlers_for(row["type"])
        if update["lost_leases"] >= quarantine_after:
            error = QUARANTINE_ERROR.format(n=update["lost_leases"])
            update.update(status=EventStatus.DEAD, next_attempt_at=None, lease_token=None, last_error=error)
            for run in runs[event_id].values():
                if run["status"] == RunStatus.RUNNING:
                    interrupted.append(_interrupted(event_id, run))
                    run_updates.append({**_run_values(run), "b_run_id": run["id"], "status": RunStatus.DEAD,
                                        "last_error": error, "finished_at": now})
            claims[event_id] = _Claim(_claimed(row, error), handlers, [], {}, [], False, first_attempt, token,
                                      quarantined=True)
            continue
        twin = row["twin_id"]
        if not handlers or twin is not None:
            update.update(status=EventStatus.IGNORED, processed_at=now, next_attempt_at=None, lease_token=None,
                          lost_leases=0, last_error=f"already handled as event {twin}" if twin else None)
            claims[event_id] = _Claim(_claimed(row, update["last_error"]), [], [], {}, [], False, first_attempt,
                                      token)
            continue
        done = runs[event_id]
        # Succeeded runs are done for good; dead ones wait for `events replay`.
        owed = [h for h in handlers if h.name not in done or done[h.name]["status"] in (RunStatus.RUNNING,
                                                                                     RunStatus.FAILED)]
        # A run still marked `running` from an earlier try means that worker died mid-handler.
        crashed_out = [h for h in owed if h.name in done and done[h.name]["attempts"] >= max_attempts]
        to_run = [h for h in owed if h not in crashed_out]
        earlier_dead = any(run["status"] == RunStatus.DEAD for run in done.values())
        interrupted += [_interrupted(event_id, done[h.name]) for h in owed
                        if h.name in done and done[h.name]["status"] == RunStatus.RUNNING]
        attempts: dict[str, int] = {}
        for handler in to_run:
            existing = done.get(handler.name)
            attempts[handler.name] = 1 if existing is None else existing["attempts"] + 1
            if existing is None:
                run_inserts.append({"event_id": event_id, "handler": handler.name, "status": RunStatus.RUNNING,
                                    "attempts": 1, "started_at": now})
            else:
                run_updates.append({**_run_values(existing), "b_run_id": existing["id"],
                                    "status": RunStatus.RUNNING, "attempts": attempts[handler.name],
                                    "started_at": now})
        for handler in crashed_out:
            run_updates.append({**_run_values(done[handler.name]), "b_run_id": done[handler.name]["id"],
                                "status": RunStatus.DEAD, "last_error": "worker stopped during the last attempt",
                                "finished_at": now})
        claims[event_id] = _Claim(_claimed(row, row["last_error"]), handlers, to_run, attempts,
                                  [h.name for h in crashed_out], earlier_dead, first_attempt, token)
    if event_updates:
        await session.execute(_EVENT_UPDATE, event_updates)
    if run_inserts:
        await session.execute(_RUN_INSERT, run_inserts)
    if run_updates:
        await session.execute(_RUN_UPDATE_BY_ID, run_updates)
    if interrupted:
        await session.execute(_ATTEMPT_INSERT, interrupted)
    return claims, lease_until


def _interrupted(event_id: str, run: Any) -> dict[str, Any]:
    """The attempt that a run still marked `running` stands for: its worker stopped during it."""
    return {"event_id": event_id, "handler": run["handler"], "attempt": run["attempts"],
            "status": AttemptStatus.INTERRUPTED, "started_at": run["started_at"], "duration_ms": None,
            "error": INTERRUPTED_ERROR, "note": None}


def _claimed(row: Any, last_error: str | None) -> _Claimed:
    return _Claimed(row["id"], row["type"], row["source"], row["body"], row["received_at"], last_error)


def _run_values(run: Any) -> dict[str, Any]:
    return {"status": run["status"], "attempts": run["attempts"], "started_at": run["started_at"],
            "finished_at": run["finished_at"], "last_error": run["last_error"]}


# Types that happen once per object: the ones reconciliation injects when a webhook went missing.
ONCE_PER_OBJECT = frozenset({"payment.succeeded", "refund.succeeded", "dispute.lost", "dispute.accepted"})


@dataclass(frozen=True)
class _BatchItem:
    event: Event
    handlers: list[Handler]
    attempts: dict[str, int]
    settle: bool  # mark the event `processed` if all these handlers succeed
    result: _BatchResult
    token: str  # the claim's lease token


@dataclass
class _BatchResult:
    errors: dict[str, Failure] = field(default_factory=dict)
    settled: bool = False
    crash: Exception | None = None  # recording this event's runs failed (the database went away)


async def _run_batch(runtime: Runtime, connection: AsyncConnection, items: list[_BatchItem]) -> None:
    """Run the batched handlers of several events in one transaction, with their run records and
    the settling of their events: one commit, and each kind of row in one INSERT, for the batch.

    No savepoints (two more round trips per handler): if any handler raises, or the transaction
    fails as a whole (the database went away, a deadlock), nothing of the batch is kept and each
    event's handlers run again on their own, each in its own transaction, where a failure is
    recorded and retried as usual. Batched handlers only work in `ctx.session`, so running them
    again after a rollback changes nothing outside it."""
    if len(items) == 1:
        await _run_alone(runtime, items[0], connection)
        return
    try:
        async with _session(runtime, connection) as session, session.begin():
            run_updates: list[dict[str, Any]] = []
            attempts: list[dict[str, Any]] = []
            timings: list[tuple[str, float]] = []
            session.info[RESOURCES] = runtime.resources
            await _prepare(session, items)
            for item in items:
                for handler in item.handlers:
                    started_at, started = utcnow(), time.perf_counter()
                    attempt = item.attempts[handler.name]
                    context = _context(runtime, session, item.event, handler, attempt)
                    async with asyncio.timeout(runtime.settings.JOB_TIMEOUT_SECONDS):
                        await handler.func(item.event, context)
                    elapsed = time.perf_counter() - started
                    run_updates.append(_run_succeeded(item.event.id, handler, elapsed))
                    attempts.append(_attempt(item.event.id, handler, attempt, AttemptStatus.SUCCEEDED, started_at,
                                             elapsed, note=inbox.take_notes(session, item.event.id)))
                    timings.append((handler.name, elapsed))
            await session.execute(_RUN_UPDATE, run_updates)
            await session.execute(_ATTEMPT_INSERT, attempts)
            await _fence_batch(runtime, session, items)
    except Exception as exc:  # a handler may raise anything; each event then runs on its own
        log.info("a batch of %d event(s) was rolled back (%s); running each on its own",
                 len(items), _error_text(exc).splitlines()[-1])
        for item in items:
            await _run_alone(runtime, item, connection)
        return
    for name, elapsed in timings:
        runtime.metrics.observe("dodo_handler_duration_seconds", elapsed, handler=name)
    for row in attempts:
        _log_note(row)
    for item in items:
        item.result.settled = item.settle


async def _fence_batch(runtime: Runtime, session: AsyncSession, items: list[_BatchItem]) -> None:
    """Settle the batch's events that are done and renew the others' leases, each only under its
    claim's token: if any lease is no longer the batch's, the whole batch is rolled back (and each
    event, run on its own, drops its run: `LeaseLost`)."""
    for settle in (True, False):
        by_token: dict[str, list[str]] = {}
        for item in items:
            if item.settle == settle:
                by_token.setdefault(item.token, []).append(item.event.id)
        for token, ids in by_token.items():
            values = (_settled_values(EventStatus.PROCESSED) if settle else
                      {"next_attempt_at": utcnow() + timedelta(seconds=runtime.settings.LEASE_SECONDS)})
            statement = (update(_EVENTS).where(_EVENTS.c.id.in_(ids), _EVENTS.c.lease_token == token,
                                               _EVENTS.c.status == EventStatus.PROCESSING).values(**values))
            result: Any = await session.execute(statement)
            if result.rowcount != len(set(ids)):
                raise LeaseLost(f"{len(set(ids)) - result.rowcount} lease(s) of the batch were lost")


async def _fence(runtime: Runtime, session: AsyncSession, event_id: str, token: str, *, settle: bool) -> None:
    """In a handler's transaction: settle the event as `processed` (`settle`) or renew its lease,
    only if the lease is still this claim's; else `LeaseLost`, which rolls the transaction back."""
    values = (_settled_values(EventStatus.PROCESSED) if settle else
              {"next_attempt_at": utcnow() + timedelta(seconds=runtime.settings.LEASE_SECONDS)})
    result: Any = await session.execute(_EVENT_FENCE, {"b_id": event_id, "b_token": token, **values})
    if result.rowcount != 1:
        raise LeaseLost(event_id)


async def _prepare(session: AsyncSession, items: list[_BatchItem]) -> None:
    """Each distinct `prepare` of the batch's handlers, once, with the events it will see."""
    events: dict[Any, list[Event]] = {}
    for item in items:
        for handler in item.handlers:
            if handler.prepare is not None:
                events.setdefault(handler.prepare, []).append(item.event)
    for prepare, its_events in events.items():
        await prepare(list({event.id: event for event in its_events}.values()), session)


async def _run_alone(runtime: Runtime, item: _BatchItem, connection: AsyncConnection) -> None:
    """Each handler of one event in its own transaction (the last one also settles it). An error
    that is not the handler's (recording its run failed) is kept for this event's job to raise,
    so it does not fail the other events of the batch."""
    try:
        await _run_each(runtime, item, connection)
    except Exception as exc:
        item.result.crash = exc


async def _run_each(runtime: Runtime, item: _BatchItem, connection: AsyncConnection) -> None:
    result = item.result
    for index, handler in enumerate(item.handlers):
        settle = item.settle and index == len(item.handlers) - 1 and not result.errors
        error = await _run_handler(runtime, item.event, handler, item.attempts[handler.name], item.token,
                                   settle=settle, connection=connection)
        if error is not None:
            result.errors[handler.name] = error
        elif settle:
            result.settled = True


def _session(runtime: Runtime, connection: AsyncConnection | None) -> AsyncSession:
    return runtime.db.sessions() if connection is None else runtime.db.sessions(bind=connection)


def _context(runtime: Runtime, session: AsyncSession, event: Event, handler: Handler, attempt: int) -> Context:
    return Context(session=session, settings=runtime.settings, log=event_logger(event.id, handler.name),
                   event_id=event.id, handler=handler.name, attempt=attempt, resources=runtime.resources)


def _error_text(exc: BaseException) -> str:
    """The exception's type and message (its last line is what the logs show)."""
    text = scrub("".join(traceback.format_exception_only(type(exc), exc))).strip() or type(exc).__name__
    return text if len(text) <= MAX_MESSAGE_CHARS else text[:MAX_MESSAGE_CHARS - 1] + "…"


def error_record(exc: BaseException) -> str:
    """What is stored of a handler's error: the traceback (its innermost part, when long) and the
    exception's type and message, within MAX_ERROR_CHARS, without SQL or its parameters."""
    lines = list(traceback.TracebackException.from_exception(exc).format())
    only = list(traceback.format_exception_only(type(exc), exc))
    body = scrub("".join(lines[:len(lines) - len(only)]))
    message = _error_text(exc)
    room = MAX_ERROR_CHARS - len(message) - 2
    if len(body) > room:
        body = "…" + body[len(body) - room + 1:]
    return body + message


def _run_succeeded(event_id: str, handler: Handler, elapsed: float) -> dict[str, Any]:
    return {"b_event_id": event_id, "b_handler": handler.name, "status": RunStatus.SUCCEEDED,
            "duration_ms": elapsed * 1000, "finished_at": utcnow(), "last_error": None}


def _run_failed(runtime: Runtime, event_id: str, handler: Handler, attempt: int, elapsed: float,
                error: str, *, permanent: bool = False) -> dict[str, Any]:
    """The run's record after a failure (dead once out of attempts, or at once if permanent)."""
    status = RunStatus.DEAD if permanent or attempt >= runtime.settings.MAX_ATTEMPTS else RunStatus.FAILED
    return {"b_event_id": event_id, "b_handler": handler.name, "status": status,
            "duration_ms": elapsed * 1000, "finished_at": utcnow(), "last_error": error}


def _attempt(event_id: str, handler: Handler, attempt: int, status: str, started_at: datetime, elapsed: float,
             *, error: str | None = None, note: str | None = None) -> dict[str, Any]:
    """A `handler_attempts` row."""
    return {"event_id": event_id, "handler": handler.name, "attempt": attempt, "status": status,
            "started_at": started_at, "duration_ms": elapsed * 1000, "error": error, "note": note}


def _log_note(attempt: dict[str, Any]) -> None:
    """Log what a committed attempt noted (a stale event it skipped): once, as the event shows it."""
    if attempt["note"]:
        event_logger(attempt["event_id"], attempt["handler"]).info("%s", attempt["note"])


async def _run_handler(runtime: Runtime, event: Event, handler: Handler, attempt: int, token: str, *,
                       settle: bool = False, connection: AsyncConnection | None = None) -> Failure | None:
    """Run one handler in its own transaction; None on success, else the error text (recorded on
    the run). With `settle`, its success also marks the event `processed`, in the same transaction.
    `connection`: one to use instead of a new one from the pool."""
    started_at, started = utcnow(), time.perf_counter()
    error: Failure | None = None
    try:
        async with _session(runtime, connection) as session, session.begin():
            # Also enforced here because in a batch the handler runs in the batcher's task, which
            # arq's job timeout does not cancel: a hanging handler would stop every later batch.
            async with asyncio.timeout(runtime.settings.JOB_TIMEOUT_SECONDS):
                await handler.func(event, _context(runtime, session, event, handler, attempt))
            elapsed = time.perf_counter() - started
            done = _attempt(event.id, handler, attempt, AttemptStatus.SUCCEEDED, started_at, elapsed,
                            note=inbox.take_notes(session, event.id))
            await session.execute(_RUN_UPDATE, _run_succeeded(event.id, handler, elapsed))
            await session.execute(_ATTEMPT_INSERT, done)
            await _fence(runtime, session, event.id, token, settle=settle)
        _log_note(done)
    except LeaseLost:
        raise
    except Exception as exc:  # a handler may raise anything; it is recorded and retried
        error = Failure(_error_text(exc), permanent=isinstance(exc, PermanentError))
        elapsed = time.perf_counter() - started
        record = error_record(exc)
        failed = _run_failed(runtime, event.id, handler, attempt, elapsed, record, permanent=error.permanent)
        async with _session(runtime, connection) as session, session.begin():
            await session.execute(_RUN_UPDATE, failed)
            await session.execute(_ATTEMPT_INSERT, _attempt(event.id, handler, attempt, failed["status"],
                                                            started_at, elapsed, error=record))
            await _fence(runtime, session, event.id, token, settle=False)
    runtime.metrics.observe("dodo_handler_duration_seconds", elapsed, handler=handler.name)
    return error


# Built once: Core statements with the values as parameters (no ORM bulk-update bookkeeping, no
# new statement and cache key per event).
_RUNS: Any = HandlerRunRow.__table__
_RUN_UPDATE = update(_RUNS).where(_RUNS.c.event_id == bindparam("b_event_id"),
                                  _RUNS.c.handler == bindparam("b_handler"))
_RUN_UPDATE_BY_ID = update(_RUNS).where(_RUNS.c.id == bindparam("b_run_id"))
_RUN_INSERT = insert(_RUNS)
_ATTEMPTS: Any = HandlerAttemptRow.__table__
_ATTEMPT_INSERT = insert(_ATTEMPTS)
_RUNS_SELECT = select(_RUNS).where(_RUNS.c.event_id.in_(bindparam("ids", expanding=True)))
_EVENTS: Any = EventRow.__table__
_EVENT_UPDATE = update(_EVENTS).where(_EVENTS.c.id == bindparam("b_id"))
_TYPES_SELECT = select(_EVENTS.c.id, _EVENTS.c.type).where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)))
# A write that settles or renews an event only under the claim's lease token (fencing).
_EVENT_FENCE = update(_EVENTS).where(_EVENTS.c.id == bindparam("b_id"), _EVENTS.c.lease_token == bindparam("b_token"),
                                     _EVENTS.c.status == EventStatus.PROCESSING)
_LEASE_RELEASE = (update(_EVENTS).where(_EVENTS.c.id == bindparam("b_id"),
                                        _EVENTS.c.status == EventStatus.PROCESSING,
                                        _EVENTS.c.lease_token == bindparam("b_token"))
                  .values(next_attempt_at=bindparam("b_now"), lease_token=None))
# A webhook that arrives after reconciliation repaired its object (or a repair that raced its
# webhook) is the same news, and the merchant's handlers should not hear it twice: on an event's
# first claim, `twin_id` is an event already processed for the same type and object when one of
# the two came from reconciliation. In the claim's own query: one round trip fewer per batch.
_OTHER = _EVENTS.alias("other")
_TWIN = (select(_OTHER.c.id)
         .where(_OTHER.c.type == _EVENTS.c.type, _OTHER.c.object_id == _EVENTS.c.object_id,
                _OTHER.c.id != _EVENTS.c.id, _OTHER.c.status == EventStatus.PROCESSED,
                or_(_EVENTS.c.source == EventSource.RECONCILE, _OTHER.c.source == EventSource.RECONCILE))
         .order_by(_OTHER.c.id).limit(1).scalar_subquery())
_CLAIM_SELECT = (select(_EVENTS, case((and_(_EVENTS.c.attempts == 0, _EVENTS.c.type.in_(sorted(ONCE_PER_OBJECT)),
                                            _EVENTS.c.object_id.is_not(None)), _TWIN)).label("twin_id"))
                 .where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)))
                 .order_by(_EVENTS.c.id).with_for_update(of=_EVENTS))


def _settled_values(status: str, *, retry_in: float | None = None, error: str | None = None) -> dict[str, Any]:
    now = utcnow()
    # `next_attempt_at`: the retry's time, or none (which also ends the claim's lease).
    values: dict[str, Any] = {"status": status, "updated_at": now, "last_error": error, "lease_token": None,
                              "lost_leases": 0,
                              "next_attempt_at": None if retry_in is None else now + timedelta(seconds=retry_in)}
    if status in (EventStatus.PROCESSED, EventStatus.IGNORED):
        values["processed_at"] = now
    return values


async def _settle(runtime: Runtime, claim: _Claim, status: str, *, retry_in: float | None = None,
                  error: str | None = None) -> None:
    """Settle the event, only under the claim's lease (else `LeaseLost`: the new owner settles)."""
    values = _settled_values(status, retry_in=retry_in, error=error)
    async with runtime.db.sessions() as session, session.begin():
        result: Any = await session.execute(_EVENT_FENCE, {"b_id": claim.row.id, "b_token": claim.token, **values})
        if result.rowcount != 1:
            raise LeaseLost(claim.row.id)
