"""A subscription keeps one licence key for its whole life; seats, holds, renewals, plan changes
and cancellation change its limit and status, in whatever order the events arrive."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.entitlements.conftest import (
    KEY_ONLY,
    PRODUCT,
    SEAT,
    entitlements,
    payment,
    send_and_wait,
    subscription,
    write_catalog,
)
from tests.support import Stack
from worker.entitlements.models import AuditRow, GrantRow


def _key(grants: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [g for g in grants if g["kind"] == "license_key"]
    assert len(keys) == 1, keys
    return keys[0]


async def _state(stack: Stack, sub_id: str) -> tuple[str, int | None, str]:
    key = _key(await entitlements(stack, subscription_id=sub_id))
    return key["status"], key["license_key"]["activations_limit"], key["license_key"]["key"]


async def test_lifecycle_with_seats_keeps_one_key(ent_stack: Stack) -> None:
    sub = "sub_life"
    # base 1 (catalog) + 3 seats x 1
    active = await send_and_wait(ent_stack, "subscription.active", subscription(sub, addons=[(SEAT, 3)]),
                                 timestamp="2026-09-01T00:00:00Z")
    status, limit, key = await _state(ent_stack, sub)
    assert (status, limit) == ("active", 4)

    await send_and_wait(ent_stack, "subscription.on_hold",
                        subscription(sub, status="on_hold", addons=[(SEAT, 3)]), timestamp="2026-10-01T00:00:00Z")
    assert await _state(ent_stack, sub) == ("suspended", 4, key)

    await send_and_wait(ent_stack, "subscription.renewed",
                        subscription(sub, status="active", addons=[(SEAT, 3)], payment_id="pay_renew"),
                        timestamp="2026-10-02T00:00:00Z")
    assert await _state(ent_stack, sub) == ("active", 4, key)
    # the renewal payment itself grants nothing new
    await send_and_wait(ent_stack, "payment.succeeded",
                        payment("pay_renew", [(KEY_ONLY, 1)], subscription_id=sub))
    assert len(await entitlements(ent_stack, subscription_id=sub)) == 1

    await send_and_wait(ent_stack, "subscription.updated",
                        subscription(sub, status="active", addons=[(SEAT, 1)]), timestamp="2026-10-05T00:00:00Z")
    assert await _state(ent_stack, sub) == ("active", 2, key)

    cancelled = await send_and_wait(ent_stack, "subscription.cancelled",
                                    subscription(sub, status="cancelled", addons=[(SEAT, 1)]),
                                    timestamp="2026-11-01T00:00:00Z")
    assert await _state(ent_stack, sub) == ("revoked", 2, key)

    async with ent_stack.db.sessions() as session:
        grant = await session.scalar(select(GrantRow).where(GrantRow.subscription_id == sub))
        assert grant is not None
        trail = list(await session.scalars(select(AuditRow).where(AuditRow.grant_id == grant.id)
                                           .order_by(AuditRow.id)))
    assert [(a.action, a.to_status) for a in trail] == [
        ("granted", "active"), ("suspended", "suspended"), ("resumed", "active"),
        ("limit_changed", "active"), ("revoked", "revoked")]
    assert trail[0].event_id == active and trail[-1].event_id == cancelled
    assert "4 -> 2" in (trail[3].reason or "")
    assert grant.payment_id == "pay_renew"


async def test_out_of_order_events_end_in_the_right_state(ent_stack: Stack) -> None:
    sub = "sub_order"
    # cancelled (newest) arrives first, then the older active and on_hold: the key stays revoked.
    await send_and_wait(ent_stack, "subscription.cancelled", subscription(sub, status="cancelled"),
                        timestamp="2026-11-01T00:00:00Z")
    await send_and_wait(ent_stack, "subscription.active", subscription(sub, addons=[(SEAT, 5)]),
                        timestamp="2026-09-01T00:00:00Z")
    await send_and_wait(ent_stack, "subscription.on_hold", subscription(sub, status="on_hold"),
                        timestamp="2026-10-01T00:00:00Z")
    status, limit, _ = await _state(ent_stack, sub)
    assert (status, limit) == ("revoked", 1)

    # on_hold (newer) before active (older): suspended, and a late older `active` does not resume.
    other = "sub_order2"
    await send_and_wait(ent_stack, "subscription.on_hold", subscription(other, status="on_hold"),
                        timestamp="2026-10-01T00:00:00Z")
    await send_and_wait(ent_stack, "subscription.active", subscription(other, addons=[(SEAT, 2)]),
                        timestamp="2026-09-01T00:00:00Z")
    assert (await _state(ent_stack, other))[:2] == ("suspended", 1)
    # a newer `active` resumes and sets the seats it shows
    await send_and_wait(ent_stack, "subscription.renewed", subscription(other, addons=[(SEAT, 2)]),
                        timestamp="2026-10-03T00:00:00Z")
    assert (await _state(ent_stack, other))[:2] == ("active", 3)
    # cancelled is terminal: even a newer `active` does not bring it back
    await send_and_wait(ent_stack, "subscription.expired", subscription(other, status="expired"),
                        timestamp="2026-12-01T00:00:00Z")
    await send_and_wait(ent_stack, "subscription.active", subscription(other),
                        timestamp="2026-12-02T00:00:00Z")
    assert (await _state(ent_stack, other))[0] == "revoked"


async def test_plan_change_moves_the_key_to_the_new_product(stack_factory: Any, tmp_path: Path) -> None:
    extra = '\n[products.pdt_team]\nlicense_key = { activations_limit = 5 }\n'
    stack = await stack_factory(ENTITLEMENTS_FILE=str(write_catalog(tmp_path, extra=extra)))
    sub = "sub_plan"
    await send_and_wait(stack, "subscription.active", subscription(sub, PRODUCT, addons=[(SEAT, 1)]),
                        timestamp="2026-09-01T00:00:00Z")
    before = await entitlements(stack, subscription_id=sub)
    assert sorted((g["kind"], g["status"]) for g in before) == [("file", "active"), ("license_key", "active")]
    key = _key(before)["license_key"]["key"]
    assert _key(before)["license_key"]["activations_limit"] == 3

    await send_and_wait(stack, "subscription.plan_changed", subscription(sub, "pdt_team", addons=[(SEAT, 1)]),
                        timestamp="2026-10-01T00:00:00Z")
    after = await entitlements(stack, subscription_id=sub)
    moved = _key(after)
    assert (moved["product_id"], moved["status"], moved["license_key"]["key"]) == ("pdt_team", "active", key)
    assert moved["license_key"]["activations_limit"] == 6
    assert [(g["product_id"], g["status"]) for g in after if g["kind"] == "file"] == [(PRODUCT, "revoked")]


async def test_refund_of_a_renewal_before_the_renewal_event_revokes(ent_stack: Stack) -> None:
    from tests.entitlements.conftest import refund

    sub = "sub_refunded"
    await send_and_wait(ent_stack, "subscription.active", subscription(sub), timestamp="2026-09-01T00:00:00Z")
    await send_and_wait(ent_stack, "refund.succeeded", refund("pay_renewal", "ref_renewal"))
    await send_and_wait(ent_stack, "subscription.renewed", subscription(sub, payment_id="pay_renewal"),
                        timestamp="2026-10-01T00:00:00Z")
    [key] = await entitlements(ent_stack, subscription_id=sub)
    assert (key["status"], key["status_reason"], key["payment_id"]) == ("revoked", "refund", "pay_renewal")


FIRST_PAYMENT_ORDERS = {
    "active, payment, refund": ["active", "payment", "refund"],
    "payment, active, refund": ["payment", "active", "refund"],
    "refund, payment, active": ["refund", "payment", "active"],
    "refund, active, payment": ["refund", "active", "payment"],
    "active, refund, payment": ["active", "refund", "payment"],
}


@pytest.mark.parametrize("order", list(FIRST_PAYMENT_ORDERS), ids=list(FIRST_PAYMENT_ORDERS))
async def test_refund_of_the_first_payment_revokes_in_any_order(ent_stack: Stack, order: str) -> None:
    """`subscription.active` names no payment; the first payment's `payment.succeeded` names the
    subscription. Its full refund must take the subscription's key away however the three
    arrive."""
    from tests.entitlements.conftest import refund

    sub, pay = "sub_first", "pay_first"
    events = {
        "active": ("subscription.active", subscription(sub), "2026-09-01T00:00:00Z"),
        "payment": ("payment.succeeded", payment(pay, [(KEY_ONLY, 1)], subscription_id=sub), None),
        "refund": ("refund.succeeded", refund(pay, "ref_first"), None),
    }
    for name in FIRST_PAYMENT_ORDERS[order]:
        event_type, data, timestamp = events[name]
        await send_and_wait(ent_stack, event_type, data, timestamp=timestamp)
    [key] = await entitlements(ent_stack, subscription_id=sub)
    assert (key["status"], key["status_reason"], key["payment_id"]) == ("revoked", "refund", pay)
    assert await entitlements(ent_stack, payment_id=pay) == [key]  # and nothing granted twice


async def test_first_payment_dispute_lost_then_won_follows_the_subscription(ent_stack: Stack) -> None:
    from tests.entitlements.conftest import dispute

    sub, pay = "sub_disputed", "pay_disputed"
    await send_and_wait(ent_stack, "subscription.active", subscription(sub), timestamp="2026-09-01T00:00:00Z")
    await send_and_wait(ent_stack, "payment.succeeded", payment(pay, [(KEY_ONLY, 1)], subscription_id=sub))
    await send_and_wait(ent_stack, "dispute.lost", dispute(pay, "dp_first"))
    assert _key(await entitlements(ent_stack, subscription_id=sub))["status"] == "revoked"
    await send_and_wait(ent_stack, "dispute.won", dispute(pay, "dp_first", status="dispute_won"))
    assert _key(await entitlements(ent_stack, subscription_id=sub))["status"] == "active"


async def test_a_renewal_payment_does_not_take_over_from_the_renewal_event(ent_stack: Stack) -> None:
    """Grants answer to the latest payment a renewal named; an older payment's late
    `payment.succeeded` does not move them back, and its refund then leaves them alone."""
    from tests.entitlements.conftest import refund

    sub = "sub_renewed"
    await send_and_wait(ent_stack, "subscription.active", subscription(sub), timestamp="2026-09-01T00:00:00Z")
    await send_and_wait(ent_stack, "subscription.renewed", subscription(sub, payment_id="pay_oct"),
                        timestamp="2026-10-01T00:00:00Z")
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_sep", [(KEY_ONLY, 1)], subscription_id=sub))
    await send_and_wait(ent_stack, "refund.succeeded", refund("pay_sep", "ref_sep"))
    key = _key(await entitlements(ent_stack, subscription_id=sub))
    assert (key["status"], key["payment_id"]) == ("active", "pay_oct")


async def test_first_payment_and_activation_at_once_do_not_miss_each_other(ent_stack: Stack,
                                                                           catalog_path: Path) -> None:
    """Two workers: one handles `subscription.active` while the other handles its first
    `payment.succeeded`. Each must see what the other wrote (locks), so the grants end up
    answering to the payment, and its refund reaches them."""
    import asyncio

    from worker.entitlements.catalog import load_catalog
    from worker.entitlements.payments import on_payment, on_refund
    from worker.entitlements.service import Actor, Grants
    from worker.entitlements.subscriptions import on_subscription
    from worker.events import Payment, Refund, Subscription

    catalog = load_catalog(catalog_path)

    async def in_transaction(name: str, work: Any) -> None:
        async with ent_stack.db.sessions() as session, session.begin():
            await work(Grants(session, ent_stack.settings, catalog, Actor.for_event(name)))

    from tests.entitlements.conftest import refund

    for n in range(5):
        sub, pay = f"sub_race_{n}", f"pay_race_{n}"
        active = Subscription.model_validate(subscription(sub))
        paid = Payment.model_validate(payment(pay, [(KEY_ONLY, 1)], subscription_id=sub))
        await asyncio.gather(
            in_transaction(f"evt_a{n}", lambda g: on_subscription(g, active, "subscription.active",  # noqa: B023
                                                                  "2026-09-01T00:00:00Z")),
            in_transaction(f"evt_p{n}", lambda g: on_payment(g, paid)),  # noqa: B023
        )
        await in_transaction(f"evt_r{n}", lambda g: on_refund(g, Refund.model_validate(refund(pay, f"ref_{n}"))))  # noqa: B023
        [key] = await entitlements(ent_stack, subscription_id=sub)
        assert (key["status"], key["payment_id"]) == ("revoked", pay), n
