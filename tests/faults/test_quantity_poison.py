"""Hostile signed orders against real `web` and `worker` processes: a 2^31-quantity order does
not stall the worker (the next order is granted within 10 s, the poison settles dead with its
reason), and a newline in a payment id forges no line in the worker's log."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.faults.conftest import MakeStack
from tests.faults.procs import PRODUCT, FaultStack, elapsed_since
from tests.support import sample_envelope, wait_until

FORGED = "2026-01-01 ERROR forged"


async def _send(stack: FaultStack, payment_id: str, quantity: Any = 1) -> str:
    envelope = sample_envelope("payment.succeeded")
    envelope["data"]["payment_id"] = payment_id
    envelope["data"]["product_cart"] = [{"product_id": PRODUCT, "quantity": quantity}]
    body = json.dumps(envelope).encode()
    event_id = f"msg_{abs(hash(payment_id))}"
    response = await stack.post(body, stack.signed(body, event_id))
    assert response.status_code == 200, response.text
    return event_id


async def test_the_quantity_poison_stalls_nothing(make_stack: MakeStack) -> None:
    stack = await make_stack(entitlements=True)
    await stack.start_web()
    await stack.start_worker()
    poison = await _send(stack, "pay_huge_qty", 2**31)
    started = time.monotonic()
    await _send(stack, "pay_after_poison")

    async def granted() -> bool:
        return (("pay_after_poison", "license_key") in await stack.entitlement_grants())

    await wait_until(granted, 10, what="the order after the poison to be granted")
    took = elapsed_since(started)
    shown = stack.cli_json("events", "show", poison)

    async def dead() -> bool:
        nonlocal shown
        shown = stack.cli_json("events", "show", poison)
        return bool(shown["status"] == "dead")

    await wait_until(dead, 10, what="the poison to settle dead")
    assert shown["attempts"] == 1
    assert "quantity 2147483648 is over the cap of 1000 units per line" in shown["last_error"]
    assert not any(p == "pay_huge_qty" for p, _ in await stack.entitlement_grants())
    print(f"\nquantity poison: the next order granted in {took}s; the poison dead after 1 attempt")


async def test_a_newline_in_a_payment_id_forges_no_log_line(make_stack: MakeStack) -> None:
    stack = await make_stack(entitlements=True)
    await stack.start_web()
    worker = await stack.start_worker()
    payment_id = f"pay_forge\n{FORGED}"
    event_id = await _send(stack, payment_id)

    async def logged() -> bool:
        return "pay_forge" in worker.log()

    await wait_until(logged, 20, what="the worker to log the payment")
    lines = worker.log().splitlines()
    assert not [line for line in lines if line.startswith(FORGED)], worker.log()
    assert any(f"pay_forge\\n{FORGED}" in line for line in lines), worker.log()
    assert event_id
