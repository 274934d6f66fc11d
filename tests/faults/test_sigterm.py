"""SIGTERM while slow handlers run: they finish within the grace period, or are cut short and
run again by the next worker; no event ends `failed` or `dead`, no order is granted twice."""

from __future__ import annotations

import signal
import time

from sqlalchemy import select

from tests.faults.conftest import MakeStack
from tests.faults.procs import FaultStack, Proc, elapsed_since
from tests.support import wait_until
from worker.store import HandlerRunRow

ORDERS = 30


async def _running(stack: FaultStack, at_least: int) -> None:
    async def enough() -> bool:
        return (await stack.run_statuses())["running"] >= at_least

    await wait_until(enough, 30, what=f"{at_least} handlers running")


async def _busy_worker(stack: FaultStack, prefix: str) -> tuple[Proc, list[str]]:
    """Web and a worker of concurrency 10, ORDERS orders sent, 10 handlers in flight."""
    await stack.start_web()
    worker = await stack.start_worker()
    payments = [f"{prefix}_{i:03d}" for i in range(ORDERS)]
    codes = await stack.send_payments(payments)
    assert set(codes.values()) == {200}
    await _running(stack, 10)
    return worker, payments


async def _attempts(stack: FaultStack) -> dict[str, int]:
    async with stack.db.sessions() as session:
        rows = await session.execute(select(HandlerRunRow.event_id, HandlerRunRow.attempts))
        return {str(e): int(n) for e, n in rows.all()}


async def test_sigterm_lets_running_handlers_finish(make_stack: MakeStack) -> None:
    stack = await make_stack(FAULT_HANDLER_SECONDS="1.5", SHUTDOWN_GRACE_SECONDS="20", WORKER_CONCURRENCY="10")
    started = time.monotonic()
    worker, payments = await _busy_worker(stack, "pay_term")

    worker.signal(signal.SIGTERM)
    assert await worker.wait_exit(30) == 0, worker.log()
    runs = await stack.run_statuses()
    assert runs["running"] == 0, "every handler in flight finished before the process exited"
    assert runs["succeeded"] >= 10

    await stack.start_worker()
    assert await stack.wait_processed(ORDERS, timeout=60) == {"processed": ORDERS}
    assert await stack.grants() == dict.fromkeys(payments, 1)
    assert await stack.run_statuses() == {"succeeded": ORDERS}
    assert set((await _attempts(stack)).values()) == {1}, "nothing ran twice"
    print(f"\nSIGTERM, grace 20 s > handler 1.5 s: {ORDERS} orders in {elapsed_since(started)}s")


async def test_sigterm_past_the_grace_period_runs_the_cut_work_again(make_stack: MakeStack) -> None:
    stack = await make_stack(FAULT_HANDLER_SECONDS="4", SHUTDOWN_GRACE_SECONDS="1", WORKER_CONCURRENCY="10")
    started = time.monotonic()
    worker, payments = await _busy_worker(stack, "pay_cut")

    worker.signal(signal.SIGTERM)
    assert await worker.wait_exit(30) == 0, worker.log()
    assert await stack.grants() == {}, "the cut handlers' transactions were rolled back"

    await stack.start_worker(FAULT_HANDLER_SECONDS="0.1")
    assert await stack.wait_processed(ORDERS, timeout=60) == {"processed": ORDERS}
    assert await stack.grants() == dict.fromkeys(payments, 1)
    assert await stack.run_statuses() == {"succeeded": ORDERS}
    attempts = await _attempts(stack)
    assert sorted(attempts.values()).count(2) == 10, "the 10 cut runs ran again, the rest once"
    print(f"\nSIGTERM, grace 1 s < handler 4 s: {ORDERS} orders in {elapsed_since(started)}s")
