"""The scheduled scan in real arq workers: one scan across workers, short arq jobs, a clean stop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis
from sqlalchemy import select

from tests.reconcile.conftest import FakeApi
from tests.support import Stack, wait_until
from worker import Context, Event
from worker.reconcile.job import SETTLE
from worker.reconcile.lock import lock_key
from worker.reconcile.models import ReconcileRunRow, ReconcileStateRow
from worker.registry import Registry
from worker.testing.fakedodo import data
from worker.testing.fakedodo.data import populate

# Once a day (at midnight) so that no scheduled tick lands inside a test; the worker's start-up
# run is what these tests watch.
DAILY = {"RECONCILE_INTERVAL_MINUTES": 1440}


async def runs(stack: Stack) -> list[ReconcileRunRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(ReconcileRunRow).order_by(ReconcileRunRow.id)))


async def statuses(stack: Stack) -> list[str]:
    return sorted(r.status for r in await runs(stack))


async def test_two_workers_starting_together_scan_once(
        stack_factory: Any, registry: Registry, fake_dodo: FakeApi, caplog: Any) -> None:
    caplog.set_level("DEBUG")
    made = populate(fake_dodo.fake, payments=30, refunds=2)
    # Paid seconds ago: its webhook is most likely on the way, so the schedule leaves it for later.
    fake_dodo.fake.add("payments", data.payment(99, created_at=datetime.now(UTC) - timedelta(seconds=10)))
    granted: list[str] = []

    @registry.on("payment.succeeded")
    async def grant(event: Event, ctx: Context) -> None:
        granted.append(event.data.get("payment_id"))

    fake_dodo.fake.gate = asyncio.Event()  # hold the scan at its first list page
    first = await stack_factory(**DAILY, **fake_dodo.env)
    await wait_until(lambda: statuses(first), what="the first worker's start-up scan")
    assert await statuses(first) == ["running"]
    # arq holds every job's lock for max(function timeouts) + 10 s: the cron job adds no long one.
    assert first._worker.current.in_progress_timeout_s == first.settings.JOB_TIMEOUT_SECONDS + 10

    second = await stack_factory(web=False, QUEUE_NAME=first.settings.QUEUE_NAME, **DAILY, **fake_dodo.env)
    await wait_until(lambda: _has(second, "skipped"), what="the second worker's start-up scan to be skipped")
    fake_dodo.fake.gate.set()
    await wait_until(lambda: _has(first, "ok"), what="the scan to finish")

    assert await statuses(first) == ["ok", "skipped"]
    [done] = [r for r in await runs(first) if r.status == "ok"]
    assert (done.trigger, done.scanned, done.repaired) == ("cron", 32, 32)
    assert done.window_until is not None and done.window_until <= datetime.now(UTC) - SETTLE
    # The API's lists were read once: one page each (disputes twice: lost, accepted).
    assert [fake_dodo.fake.count(p) for p in ("/payments", "/refunds", "/disputes", "/subscriptions")] == [1, 1, 2, 1]
    for payment in made["payments"]:
        await first.wait_status(f"rec_payment.succeeded_{payment['payment_id']}", "processed")
    assert sorted(granted) == sorted(p["payment_id"] for p in made["payments"])
    async with first.db.sessions() as session:
        assert await session.get(ReconcileStateRow, "default") is not None
    assert not await _locked(first)
    assert "reconciliation: 32 object(s) read" in caplog.text
    assert fake_dodo.fake.api_key not in caplog.text  # not even at DEBUG level


async def test_stopping_the_worker_interrupts_its_scan_and_frees_the_lock(
        stack_factory: Any, fake_dodo: FakeApi) -> None:
    populate(fake_dodo.fake, payments=5)
    fake_dodo.fake.gate = asyncio.Event()
    stack = await stack_factory(web=False, **DAILY, **fake_dodo.env)
    await wait_until(lambda: _has(stack, "running"), what="the start-up scan")
    assert await _locked(stack)

    await stack.stop_worker()
    [run] = await runs(stack)
    assert run.status == "interrupted" and run.finished_at is not None
    assert not await _locked(stack)
    async with stack.db.sessions() as session:
        assert await session.get(ReconcileStateRow, "default") is None  # the mark did not move

    # The next worker scans the same window again.
    fake_dodo.fake.gate.set()
    await stack.start_worker()
    await wait_until(lambda: _has(stack, "ok"), what="the next worker's scan")
    assert [r.scanned for r in await runs(stack) if r.status == "ok"] == [5]


async def test_no_api_key_no_schedule(stack_factory: Any, caplog: Any) -> None:
    caplog.set_level("INFO", logger="dodo_worker.reconcile")
    stack = await stack_factory(web=False)
    assert not any(name.endswith(":reconcile") for name in stack._worker.current.functions)
    assert "reconciliation disabled: DODO_PAYMENTS_API_KEY is not set" in caplog.text
    assert await runs(stack) == []


async def _has(stack: Stack, status: str) -> bool:
    return status in await statuses(stack)


async def _locked(stack: Stack) -> bool:
    assert stack.settings.REDIS_URL
    redis = Redis.from_url(stack.settings.REDIS_URL)
    try:
        return bool(await redis.exists(lock_key(stack.settings.QUEUE_NAME)))
    finally:
        await redis.aclose()


async def test_a_run_left_running_by_a_killed_worker_is_marked_interrupted(
        stack_factory: Any, fake_dodo: FakeApi) -> None:
    from worker.reconcile import state

    stack = await stack_factory(web=False, worker=False)
    # A worker killed mid-scan leaves its run `running`; its 60 s lease lapses on its own.
    orphan = await state.start_run(stack.db, trigger="cron", since=None, until=None, metadata=None)
    result = await fake_dodo.reconcile(stack)
    assert result["repaired"] == []
    by_id = {r.id: r for r in await runs(stack)}
    assert by_id[orphan].status == "interrupted" and by_id[orphan].error == "the process running it stopped"
    assert [r.status for r in by_id.values() if r.id != orphan] == ["ok"]
