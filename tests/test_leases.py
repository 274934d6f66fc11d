"""The claim's lease: what keeps two jobs off one event now that a job carries many events.

A `processing` event whose lease has not run out is skipped; one whose lease ran out (its worker
died) is taken as a crashed run; a stopping worker gives its leases back; the sweeper queues an
event whose lease ran out again. Real SQL and Redis, the real dispatcher.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update

from tests.support import Stack, sample_envelope, wait_until
from worker import Context, Event, leases
from worker.dispatch import Outcome, process_events
from worker.registry import Registry
from worker.runtime import Runtime
from worker.store import EventRow, EventStatus, HandlerRunRow, RunStatus, inbox
from worker.store.models import utcnow


@pytest.fixture
async def runtimes(stack_factory: Any, registry: Registry) -> AsyncIterator[tuple[Stack, Runtime, Runtime]]:
    """Two workers' runtimes on one database (no arq worker: the tests call the dispatcher)."""
    stack = await stack_factory(web=False, worker=False, JOB_TIMEOUT_SECONDS=60, LEASE_SECONDS=30)
    first, second = Runtime.create(stack.settings, registry), Runtime.create(stack.settings, registry)
    yield stack, first, second
    await first.close()
    await second.close()


async def store(stack: Stack, event_id: str) -> None:
    body = json.dumps(sample_envelope("payment.succeeded"))
    assert await inbox.insert_event(stack.db, event_id=event_id, event_type="payment.succeeded", body=body)


async def set_row(stack: Stack, event_id: str, **values: Any) -> None:
    async with stack.db.sessions() as session, session.begin():
        await session.execute(update(EventRow).where(EventRow.id == event_id).values(**values))


def gated(registry: Registry) -> tuple[asyncio.Event, asyncio.Event, list[str]]:
    """A handler that signals when it starts and waits to be let go."""
    started, release, calls = asyncio.Event(), asyncio.Event(), []

    @registry.on("payment.succeeded")
    async def gate(event: Event, ctx: Context) -> None:
        calls.append(event.id)
        started.set()
        await release.wait()

    return started, release, calls


async def running(stack: Stack, runtime: Runtime, started: asyncio.Event, event_id: str) -> asyncio.Task[Any]:
    """Store the event and start a job on it; back once its (gated) handler runs."""
    await store(stack, event_id)
    job = asyncio.create_task(process_events(runtime, [event_id]))
    await asyncio.wait_for(started.wait(), 10)
    return job


async def test_an_event_under_a_live_lease_is_skipped(runtimes, registry: Registry) -> None:
    stack, first, second = runtimes
    started, release, calls = gated(registry)
    job = await running(stack, first, started, "evt_lease_live")
    row = await stack.event("evt_lease_live")
    assert row is not None and row.status == EventStatus.PROCESSING
    assert row.next_attempt_at is not None
    # The lease lasts LEASE_SECONDS (30 s here) from the claim, not the job timeout (60 s).
    assert timedelta(seconds=25) < row.next_attempt_at - utcnow() <= timedelta(seconds=30)

    assert await process_events(second, ["evt_lease_live"]) == [Outcome("skipped")]
    assert calls == ["evt_lease_live"], "the second job did not run the handler"

    release.set()
    assert await job == [Outcome("processed")]
    row = await stack.event("evt_lease_live")
    assert row is not None and (row.status, row.attempts, row.next_attempt_at) == (EventStatus.PROCESSED, 1, None)


async def test_an_expired_lease_is_a_crashed_run(runtimes, registry: Registry) -> None:
    """As after a SIGKILL: the run left `running` uses up its attempt, and the event runs again."""
    stack, first, _ = runtimes
    _, release, calls = gated(registry)
    release.set()
    await store(stack, "evt_lease_dead")
    await set_row(stack, "evt_lease_dead", status=EventStatus.PROCESSING, attempts=1,
                  next_attempt_at=utcnow() - timedelta(seconds=1))
    handler = registry.handlers_for("payment.succeeded")[0].name
    async with stack.db.sessions() as session, session.begin():
        session.add(HandlerRunRow(event_id="evt_lease_dead", handler=handler, status=RunStatus.RUNNING,
                                  attempts=1, started_at=utcnow()))

    assert await process_events(first, ["evt_lease_dead"]) == [Outcome("processed")]
    assert calls == ["evt_lease_dead"]
    row = await stack.event("evt_lease_dead")
    assert row is not None and (row.status, row.attempts) == (EventStatus.PROCESSED, 2)
    run = (await stack.runs("evt_lease_dead"))[handler]
    assert (run.status, run.attempts) == (RunStatus.SUCCEEDED, 2)


async def test_a_stopping_worker_gives_its_leases_back(runtimes, registry: Registry) -> None:
    """A job cut short by shutdown frees its events at once, so arq's re-run (on any worker)
    takes them instead of skipping them until the lease runs out."""
    stack, first, second = runtimes
    started, release, calls = gated(registry)
    job = await running(stack, first, started, "evt_lease_stop")
    first.stopping = True  # what `stop_gracefully` sets before the grace period ends
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    row = await stack.event("evt_lease_stop")
    assert row is not None and row.status == EventStatus.PROCESSING
    assert row.next_attempt_at is not None and row.next_attempt_at <= utcnow(), "the lease was given back"

    release.set()
    assert await process_events(second, ["evt_lease_stop"]) == [Outcome("processed")]
    assert calls == ["evt_lease_stop", "evt_lease_stop"]
    row = await stack.event("evt_lease_stop")
    assert row is not None and (row.status, row.attempts) == (EventStatus.PROCESSED, 2)


async def test_a_job_cancelled_without_stopping_keeps_its_lease(runtimes, registry: Registry) -> None:
    """A job timeout is not a shutdown: the event stays leased (it runs out by itself)."""
    stack, first, second = runtimes
    started, release, _ = gated(registry)
    job = await running(stack, first, started, "evt_lease_timeout")
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    release.set()
    assert await process_events(second, ["evt_lease_timeout"]) == [Outcome("skipped")]


async def test_the_sweeper_queues_events_whose_lease_ran_out(runtimes) -> None:
    stack, *_ = runtimes
    now = utcnow()
    for event_id, lease in [("evt_sweep_live", now + timedelta(seconds=30)),
                            ("evt_sweep_expired", now - timedelta(seconds=1)),
                            ("evt_sweep_none_recent", None), ("evt_sweep_none_old", None)]:
        await store(stack, event_id)
        await set_row(stack, event_id, status=EventStatus.PROCESSING, next_attempt_at=lease, updated_at=now)
    await set_row(stack, "evt_sweep_none_old", updated_at=now - timedelta(seconds=300))

    async with stack.db.sessions() as session:
        ids = await inbox.ids_to_sweep(session, older_than=timedelta(0), stuck_after=timedelta(seconds=90))
        expired = await inbox.expired_leases(session)
    assert sorted(ids) == ["evt_sweep_none_old"]
    assert [event_id for event_id, _ in expired] == ["evt_sweep_expired"]


def short_leases(stack: Stack, registry: Registry, seconds: float = 1) -> tuple[Runtime, Runtime]:
    """Two workers' runtimes whose leases last `seconds`."""
    settings = stack.settings.model_copy(update={"LEASE_SECONDS": seconds})
    return Runtime.create(settings, registry), Runtime.create(settings, registry)


async def test_a_lease_that_is_not_renewed_is_taken_over_and_the_late_settle_is_dropped(
        runtimes, registry: Registry) -> None:
    """A worker that stops renewing (dead or stalled: no heartbeat here) loses the event within
    its lease; when it comes back, its settle finds another claim's token and keeps nothing."""
    stack, *_ = runtimes
    first, second = short_leases(stack, registry)
    try:
        started, release, calls = gated(registry)
        job = await running(stack, first, started, "evt_lease_lost")
        started.clear()
        taken = asyncio.create_task(take_over(second, "evt_lease_lost"))
        await asyncio.wait_for(started.wait(), 5)  # within seconds (a lease of 1 s)
        async with stack.db.sessions() as session:
            ids = [event_id for event_id, _ in await inbox.expired_leases(session)]
        assert ids == [], "the new claim holds a fresh lease"
        release.set()
        assert await job == [Outcome("lost")], "the stale worker's settle was dropped"
        assert await taken == [Outcome("processed")]
        row = await stack.event("evt_lease_lost")
        assert row is not None and (row.status, row.attempts, row.lost_leases) == (EventStatus.PROCESSED, 2, 0)
        assert calls == ["evt_lease_lost", "evt_lease_lost"]
    finally:
        await first.close()
        await second.close()


async def take_over(runtime: Runtime, event_id: str) -> list[Outcome | BaseException]:
    """Run the event on `runtime` as soon as its lease lets it (as the heartbeat's takeover does)."""
    while (outcome := await process_events(runtime, [event_id])) == [Outcome("skipped")]:
        await asyncio.sleep(0.05)
    return outcome


async def test_a_slow_live_handler_keeps_its_lease(runtimes, registry: Registry) -> None:
    """The heartbeat renews the lease of a handler that runs longer than the lease: another
    worker skips the event all along, and it runs once."""
    stack, *_ = runtimes
    first, second = short_leases(stack, registry)
    try:
        leases.start(first)
        started, release, calls = gated(registry)
        job = await running(stack, first, started, "evt_lease_slow")
        deadline = asyncio.get_running_loop().time() + 3  # three leases
        while asyncio.get_running_loop().time() < deadline:
            assert await process_events(second, ["evt_lease_slow"]) == [Outcome("skipped")]
            await asyncio.sleep(0.2)
        release.set()
        assert await job == [Outcome("processed")]
        assert calls == ["evt_lease_slow"]
        row = await stack.event("evt_lease_slow")
        assert row is not None and (row.status, row.attempts) == (EventStatus.PROCESSED, 1)
    finally:
        await first.close()
        await second.close()


async def test_an_event_that_loses_its_lease_three_times_is_quarantined(runtimes, registry: Registry) -> None:
    stack, first, _ = runtimes
    _, release, calls = gated(registry)
    release.set()
    await store(stack, "evt_lease_poison")
    handler = registry.handlers_for("payment.succeeded")[0].name
    async with stack.db.sessions() as session, session.begin():
        session.add(HandlerRunRow(event_id="evt_lease_poison", handler=handler, status=RunStatus.RUNNING,
                                  attempts=2, started_at=utcnow()))
    # Two lost leases already counted; the third one has just run out.
    await set_row(stack, "evt_lease_poison", status=EventStatus.PROCESSING, attempts=3, lost_leases=2,
                  lease_token="a" * 32, next_attempt_at=utcnow() - timedelta(seconds=1))

    assert await process_events(first, ["evt_lease_poison"]) == [Outcome("dead")]
    assert calls == [], "the poison did not run again"
    async with stack.db.sessions() as session:
        detail = await inbox.event_detail(session, "evt_lease_poison")
    assert detail is not None and detail["status"] == EventStatus.DEAD
    assert detail["last_error"] == "quarantined: the worker processing it died or stalled 3 times; see the logs"
    [view] = detail["handlers"]
    assert view["status"] == RunStatus.DEAD and view["error"] == detail["last_error"]
    assert [run["status"] for run in view["runs"]] == ["interrupted"]


async def test_a_given_back_lease_is_not_a_lost_one(runtimes, registry: Registry) -> None:
    """A stopping worker's leases do not count towards quarantine."""
    stack, first, second = runtimes
    started, release, _ = gated(registry)
    job = await running(stack, first, started, "evt_lease_given")
    first.stopping = True
    job.cancel()
    with pytest.raises(asyncio.CancelledError):
        await job
    release.set()
    assert await process_events(second, ["evt_lease_given"]) == [Outcome("processed")]
    row = await stack.event("evt_lease_given")
    assert row is not None and row.lost_leases == 0


async def test_one_event_in_two_jobs_at_once_runs_once(stack_factory, registry: Registry) -> None:
    """The receiver's job and a sweeper's job can carry the same event: through the real worker,
    with both on the queue at once, its handler runs once."""
    calls: list[str] = []

    @registry.on("payment.succeeded")
    async def count(event: Event, ctx: Context) -> None:
        calls.append(event.id)
        await asyncio.sleep(0.05)

    stack = await stack_factory(web=False, worker=False)
    ids = [f"evt_twice_{n}" for n in range(30)]
    for event_id in ids:
        await store(stack, event_id)
    runtime = Runtime.create(stack.settings, registry)
    try:
        from worker import queue

        assert await queue.enqueue_events(runtime.redis, stack.settings.QUEUE_NAME, ids)
        assert await queue.enqueue_each(runtime.redis, stack.settings.QUEUE_NAME, ids)
    finally:
        await runtime.close()
    await stack.start_worker()

    async def all_processed() -> bool:
        rows = [await stack.event(event_id) for event_id in ids]
        return all(row is not None and row.status == EventStatus.PROCESSED for row in rows)

    await wait_until(all_processed, what="every event to be processed")
    assert sorted(calls) == sorted(ids), "each event's handler ran exactly once"


async def test_events_for_handlers_without_batched_go_one_job_each(stack_factory, registry: Registry) -> None:
    """A job of many events hands the events that a plain (non-batched) handler runs for to jobs
    of their own, so that each has its own time limit and only `WORKER_CONCURRENCY` of them are
    claimed at once; the rest it processes itself."""
    from worker import queue
    from worker.jobs import process_events_job

    plain_calls: list[str] = []
    batched_calls: list[str] = []

    @registry.on("payment.succeeded")
    async def plain(event: Event, ctx: Context) -> None:
        plain_calls.append(event.id)

    @registry.on("refund.succeeded", batched=True)
    async def in_sql(event: Event, ctx: Context) -> None:
        batched_calls.append(event.id)

    stack = await stack_factory(web=False, worker=False)
    await store(stack, "evt_plain_1")
    await store(stack, "evt_plain_2")
    body = json.dumps(sample_envelope("refund.succeeded"))
    assert await inbox.insert_event(stack.db, event_id="evt_batched", event_type="refund.succeeded", body=body)
    runtime = Runtime.create(stack.settings, registry)
    try:
        summary = await process_events_job({"runtime": runtime}, ["evt_plain_1", "evt_batched", "evt_plain_2"])
        queued = await runtime.redis.zrange(stack.settings.QUEUE_NAME, 0, -1)
    finally:
        await runtime.close()
    assert summary == "1 processed, 2 queued one by one"
    assert (plain_calls, batched_calls) == ([], ["evt_batched"])
    assert sorted(queued) == sorted(queue.job_id(stack.settings.QUEUE_NAME, event_id).encode()
                                    for event_id in ["evt_plain_1", "evt_plain_2"])


async def test_handlers_do_not_run_past_the_lease(stack_factory, registry: Registry) -> None:
    """Past its lease another worker may take the event, so its handlers stop there (each one
    alone is within the job timeout; together they are not)."""
    @registry.on("payment.succeeded")
    async def first(event: Event, ctx: Context) -> None:
        await asyncio.sleep(0.7)

    @registry.on("payment.succeeded")
    async def second(event: Event, ctx: Context) -> None:
        await asyncio.sleep(0.7)

    stack = await stack_factory(web=False, worker=False, JOB_TIMEOUT_SECONDS=1)
    await store(stack, "evt_past_lease")
    runtime = Runtime.create(stack.settings, registry)
    try:
        [outcome] = await process_events(runtime, ["evt_past_lease"])
    finally:
        await runtime.close()
    assert isinstance(outcome, TimeoutError)
    row = await stack.event("evt_past_lease")
    assert row is not None and row.status == EventStatus.PROCESSING, "left for the sweeper, as a crashed run"
    runs = await stack.runs("evt_past_lease")
    assert sorted(run.status for run in runs.values()) == [RunStatus.RUNNING, RunStatus.SUCCEEDED]


async def test_a_retry_that_is_not_due_is_not_run_early(runtimes, registry: Registry) -> None:
    """An event can sit in two jobs (its batch's and a sweeper's); the one that comes after a
    failure must not skip the back-off."""
    stack, first, _ = runtimes
    _, release, calls = gated(registry)
    release.set()
    await store(stack, "evt_retry_later")
    await set_row(stack, "evt_retry_later", status=EventStatus.FAILED, attempts=1,
                  next_attempt_at=utcnow() + timedelta(seconds=30))
    assert await process_events(first, ["evt_retry_later"]) == [Outcome("skipped")]
    assert calls == []

    await set_row(stack, "evt_retry_later", next_attempt_at=utcnow() - timedelta(seconds=1))
    assert await process_events(first, ["evt_retry_later"]) == [Outcome("processed")]
    assert calls == ["evt_retry_later"]


async def test_replay_leaves_an_event_being_processed_alone(runtimes, registry: Registry) -> None:
    from worker.cli.events import replay

    stack, first, _ = runtimes
    started, release, calls = gated(registry)
    job = await running(stack, first, started, "evt_replay_busy")
    result = await replay(stack.settings, ["evt_replay_busy"], dead=False)
    assert (result["replayed"], result["busy"], result["missing"]) == ([], ["evt_replay_busy"], [])
    release.set()
    assert await job == [Outcome("processed")]
    assert calls == ["evt_replay_busy"]


async def test_an_event_whose_job_a_dead_worker_started_but_never_claimed_is_taken_over(
        stack_factory, registry: Registry) -> None:
    """arq marks a job in progress before our code claims its event; a worker killed in between
    leaves no lease to run out, and arq refuses the job id until the job timeout (plus 10 s) is
    over. The sweep takes such an event over once its job has been in progress LEASE_SECONDS."""
    from arq.constants import in_progress_key_prefix

    from worker import queue
    from worker.sweeper import sweep

    calls: list[str] = []

    @registry.on("payment.succeeded")
    async def plain(event: Event, ctx: Context) -> None:
        calls.append(event.id)

    stack = await stack_factory(web=False, LEASE_SECONDS=10)
    settings = stack.settings
    full_ms = int((settings.JOB_TIMEOUT_SECONDS + 10) * 1000)
    runtime = Runtime.create(settings, registry)
    try:
        for event_id, started_ago_ms in [("evt_orphan", 15_000), ("evt_just_started", 1_000)]:
            await store(stack, event_id)
            # What the dead worker left: its in-progress mark (set first, so that the live worker
            # never starts the job itself), the job, and the event `queued` since a while.
            in_progress = in_progress_key_prefix + queue.job_id(settings.QUEUE_NAME, event_id)
            await runtime.redis.psetex(in_progress, full_ms - started_ago_ms, b"1")
            assert await queue.enqueue_each(runtime.redis, settings.QUEUE_NAME, [event_id])
            await set_row(stack, event_id, status=EventStatus.QUEUED, updated_at=utcnow() - timedelta(seconds=60))

        await sweep(runtime)
        row = await stack.wait_status("evt_orphan", "processed", timeout=15)
        assert row.attempts == 1 and calls == ["evt_orphan"]
        # The other's job started a second ago: its worker may be about to claim it, so it is left.
        unclaimed = "arq:job:" + queue.job_id(settings.QUEUE_NAME, "evt_just_started") + ":unclaimed"
        assert not await runtime.redis.exists(unclaimed)
        async with stack.db.sessions() as session:
            left = await session.get(EventRow, "evt_just_started")
        assert left is not None and left.status == EventStatus.QUEUED
    finally:
        for event_id in ["evt_orphan", "evt_just_started"]:
            await runtime.redis.delete(in_progress_key_prefix + queue.job_id(settings.QUEUE_NAME, event_id))
        await runtime.close()
