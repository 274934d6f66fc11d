"""Two and four worker processes on one queue: every order granted exactly once (built-in
entitlement handlers and a strict test handler), even when Dodo delivers an order twice."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from tests.faults.checks import assert_granted_once
from tests.faults.conftest import MakeStack
from tests.faults.procs import elapsed_since

ORDERS = 300


@pytest.mark.parametrize("workers", [2, 4])
async def test_several_workers_grant_each_order_once(make_stack: MakeStack, workers: int) -> None:
    # Nothing is killed here, so arq's job timeout keeps a production-like value: on SQLite, four
    # processes of 20 jobs each queue on one write lock and a job may wait seconds (finding 3).
    stack = await make_stack(entitlements=True, FAULT_HANDLER_SECONDS="0.02", JOB_TIMEOUT_SECONDS="60")
    await stack.start_web()
    await asyncio.gather(*(stack.start_worker() for _ in range(workers)))
    payments = [f"pay_multi_{i:04d}" for i in range(ORDERS)]
    started = time.monotonic()
    # The same orders again, as Dodo's at-least-once delivery may do, while the first copies run.
    codes = await stack.send_payments(payments + payments[:100])
    assert set(codes.values()) == {200}

    assert await stack.wait_processed(ORDERS, timeout=90) == {"processed": ORDERS}
    took = elapsed_since(started)
    await assert_granted_once(stack, payments)
    runs = await stack.run_statuses()  # ours, entitlements.payment and handlers/example.py's
    assert set(runs) == {"succeeded"} and runs["succeeded"] % ORDERS == 0
    assert await stack.handler_attempts() == runs["succeeded"], "no handler ran twice"
    async with stack.db.sessions() as session:
        pids = (await session.execute(text("SELECT COUNT(DISTINCT pid) FROM fault_grants"))).scalar_one()
    assert pids >= 2, "the work was shared between processes"
    print(f"\n{workers} workers: {ORDERS} orders granted once each in {took}s by {pids} processes")
