"""Two and four worker processes on one queue: every order granted exactly once."""

from __future__ import annotations

import asyncio
import time

import pytest
from sqlalchemy import text

from tests.faults.conftest import MakeStack
from tests.faults.procs import elapsed_since

ORDERS = 300


@pytest.mark.parametrize("workers", [2, 4])
async def test_several_workers_grant_each_order_once(make_stack: MakeStack, workers: int) -> None:
    stack = await make_stack(FAULT_HANDLER_SECONDS="0.02")
    await stack.start_web()
    await asyncio.gather(*(stack.start_worker() for _ in range(workers)))
    payments = [f"pay_multi_{i:04d}" for i in range(ORDERS)]
    started = time.monotonic()
    # The same orders again, as Dodo's at-least-once delivery may do, while the first copies run.
    codes = await stack.send_payments(payments + payments[:100])
    assert set(codes.values()) == {200}

    assert await stack.wait_processed(ORDERS, timeout=90) == {"processed": ORDERS}
    took = elapsed_since(started)
    assert await stack.grants() == dict.fromkeys(payments, 1)
    assert await stack.run_statuses() == {"succeeded": ORDERS}
    assert await stack.handler_attempts() == ORDERS, "no handler ran twice"
    async with stack.db.sessions() as session:
        pids = (await session.execute(text("SELECT COUNT(DISTINCT pid) FROM fault_grants"))).scalar_one()
    assert pids >= 2, "the work was shared between processes"
    print(f"\n{workers} workers: {ORDERS} orders granted once each in {took}s by {pids} processes")
