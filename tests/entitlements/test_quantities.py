"""Quantities are checked before anything is planned: a bad or huge one is a clear, permanent
error on its own event, and the orders after it are granted as usual."""

from __future__ import annotations

from typing import Any

from tests.entitlements.conftest import PRODUCT, SEAT, entitlements, payment, send_and_wait, subscription
from tests.support import Stack


async def _send(stack: Stack, payment_id: str, quantity: Any) -> str:
    data = payment(payment_id, [(PRODUCT, 1)])
    data["product_cart"][0]["quantity"] = quantity
    event_id, response = await stack.send("payment.succeeded", data)
    assert response.status_code == 200, response.text
    return event_id


async def test_a_bad_quantity_is_dead_at_once_with_its_reason(ent_stack: Stack) -> None:
    sent = {f"pay_q{n}": (await _send(ent_stack, f"pay_q{n}", q), q)
            for n, q in enumerate([0, -5, "3", 2.5, True, None])}
    for payment_id, (event_id, quantity) in sent.items():
        row = await ent_stack.wait_status(event_id, "dead", "processed")
        assert row.status == "dead" and row.attempts == 1, (quantity, row.status, row.attempts)
        assert row.last_error is not None
        assert payment_id in row.last_error and PRODUCT in row.last_error and repr(quantity) in row.last_error
        assert "permanent failure in entitlements.payment" in row.last_error
        assert await entitlements(ent_stack, payment_id=payment_id) == []


async def test_an_order_after_a_huge_quantity_is_granted_promptly(ent_stack: Stack) -> None:
    poison = await _send(ent_stack, "pay_huge", 2**31)
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_next", [(PRODUCT, 1)]))
    assert {g["kind"] for g in await entitlements(ent_stack, payment_id="pay_next")} == {"license_key", "file"}
    row = await ent_stack.wait_status(poison, "dead", timeout=10)
    assert row.attempts == 1 and row.last_error is not None
    assert "quantity 2147483648 is over the cap of 1000 units per line" in row.last_error
    assert "max_units" in row.last_error
    assert await entitlements(ent_stack, payment_id="pay_huge") == []


async def test_the_catalog_raises_the_caps(stack_factory: Any, tmp_path: Any) -> None:
    from tests.entitlements.conftest import write_catalog

    catalog = write_catalog(tmp_path)
    text = catalog.read_text().replace('name = "Acme Pro"\n', 'name = "Acme Pro"\nmax_units = 2\n')
    catalog.write_text("max_units_per_order = 3\n" + text)
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog))
    await send_and_wait(stack, "payment.succeeded", payment("pay_two", [(PRODUCT, 2)]))
    assert len([g for g in await entitlements(stack, payment_id="pay_two") if g["kind"] == "license_key"]) == 2
    over = await _send(stack, "pay_three", 3)
    row = await stack.wait_status(over, "dead")
    assert row.last_error and "products.pdt_pro.max_units" in row.last_error
    data = payment("pay_order", [(PRODUCT, 2), ("pdt_key", 2)])
    event_id, _ = await stack.send("payment.succeeded", data)
    row = await stack.wait_status(event_id, "dead")
    assert row.last_error and "4 units in all is over the cap of 3 units per order" in row.last_error


async def test_a_bad_seat_quantity_is_dead_at_once_and_changes_nothing(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "subscription.active", subscription("sub_seats", addons=[(SEAT, 2)]))
    before = await entitlements(ent_stack, subscription_id="sub_seats")
    for quantity in [2**31, -1, "3", 2.5]:
        data = subscription("sub_seats", addons=[(SEAT, 1)])
        data["addons"][0]["quantity"] = quantity
        event_id, response = await ent_stack.send("subscription.updated", data)
        assert response.status_code == 200, response.text
        row = await ent_stack.wait_status(event_id, "dead", "processed")
        assert row.status == "dead" and row.attempts == 1, (quantity, row.status)
        assert row.last_error and f"add-on {SEAT}: quantity {quantity!r}" in row.last_error, row.last_error
    assert await entitlements(ent_stack, subscription_id="sub_seats") == before
