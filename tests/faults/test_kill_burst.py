"""A burst of 500 paid orders while the worker is SIGKILLed twice: every order granted once, by
the built-in entitlement handlers (a licence key and a file) and by a strict test handler."""

from __future__ import annotations

import asyncio
import time

from tests.faults.checks import assert_granted_once
from tests.faults.conftest import MakeStack
from tests.faults.procs import elapsed_since, kill
from tests.support import wait_until

ORDERS = 500
CONCURRENCY = 50


async def test_burst_with_two_sigkills_grants_every_order_exactly_once(make_stack: MakeStack) -> None:
    # A short handler delay keeps ~WORKER_CONCURRENCY handlers in flight when the kill lands.
    stack = await make_stack(entitlements=True, FAULT_HANDLER_SECONDS="0.05")
    await stack.start_web()
    worker = await stack.start_worker()
    payments = [f"pay_burst_{i:04d}" for i in range(ORDERS)]
    started = time.monotonic()
    sending = asyncio.create_task(stack.send_payments(payments, concurrency=CONCURRENCY))

    in_flight_at_kills = []
    for threshold in (60, 250):
        async def reached(threshold: int = threshold) -> bool:
            return (await stack.statuses())["processed"] >= threshold

        await wait_until(reached, 60, what=f"{threshold} orders processed")
        in_flight_at_kills.append((await stack.run_statuses())["running"])
        kill(worker)
        assert await worker.wait_exit() == -9
        worker = await stack.start_worker()

    codes = await sending
    assert sorted(set(codes.values())) == [200], "every webhook was acknowledged"
    statuses = await stack.wait_processed(ORDERS, timeout=120)
    took = elapsed_since(started)

    assert statuses == {"processed": ORDERS}, "nothing failed, dead or stuck"
    await assert_granted_once(stack, payments)
    runs = await stack.run_statuses()  # ours, entitlements.payment and handlers/example.py's
    assert set(runs) == {"succeeded"} and runs["succeeded"] % ORDERS == 0
    assert sum(in_flight_at_kills) > 0, "the kills hit handlers in flight"
    attempts = await stack.handler_attempts()
    print(f"\n500 orders, 2 SIGKILLs: all granted once in {took}s; "
          f"in flight at the kills {in_flight_at_kills}; handler attempts {attempts}")


TWO_WORKER_ORDERS = 200
RECOVERY_SECONDS = 30


async def test_the_survivor_of_two_workers_finishes_a_dead_ones_orders_within_seconds(make_stack: MakeStack) -> None:
    """Two workers, 200 orders each also running a 0.2 s handler; one worker is SIGKILLed mid-burst.
    Its claims' leases are no longer renewed, so the survivor takes them over: every order is
    granted once within RECOVERY_SECONDS of the kill (not JOB_TIMEOUT_SECONDS, 120 s)."""
    stack = await make_stack(entitlements=True, FAULT_HANDLER_SECONDS="0.2")
    await stack.start_web()
    doomed, survivor = await stack.start_worker(), await stack.start_worker()
    payments = [f"pay_pair_{i:04d}" for i in range(TWO_WORKER_ORDERS)]
    sending = asyncio.create_task(stack.send_payments(payments, concurrency=CONCURRENCY))

    async def some_processed() -> bool:
        return (await stack.statuses())["processed"] >= 40

    await wait_until(some_processed, 60, what="40 orders processed")
    in_flight = (await stack.run_statuses())["running"]
    kill(doomed)
    killed_at = time.monotonic()
    assert await doomed.wait_exit() == -9

    codes = await sending
    assert sorted(set(codes.values())) == [200], "every webhook was acknowledged"
    statuses = await stack.wait_processed(TWO_WORKER_ORDERS, timeout=RECOVERY_SECONDS)
    took = time.monotonic() - killed_at
    assert statuses == {"processed": TWO_WORKER_ORDERS}, "nothing failed, dead or stuck"
    assert took <= RECOVERY_SECONDS
    await assert_granted_once(stack, payments)
    assert survivor.alive()
    print(f"\n200 orders, 2 workers, 1 SIGKILL with {in_flight} handler run(s) in flight: "
          f"all granted once {took:.1f}s after the kill")
