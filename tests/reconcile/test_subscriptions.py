"""Subscriptions: reconciliation brings the grants to the status Dodo shows when the webhook that
announced it was lost, and leaves alone what the inbox already knows."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from tests.entitlements.conftest import KEY_ONLY, entitlements
from tests.reconcile.conftest import FakeApi, grants_by_payment
from tests.support import Stack
from worker.testing.fakedodo.data import populate


async def deliver(stack: Stack, event_type: str, sub: dict[str, Any]) -> None:
    event_id, response = await stack.send(event_type, copy.deepcopy(sub))
    assert response.status_code == 200
    await stack.wait_status(event_id, "processed")


async def test_lost_subscription_events_are_repaired_once(
        stack_factory: Any, catalog_path: Path, fake_dodo: FakeApi) -> None:
    made = populate(fake_dodo.fake, payments=0, subscriptions=5, subscription_product_id=KEY_ONLY)
    never, cancelled_later, ended_unseen, unchanged, held_later = made["subscriptions"]
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    for sub in (cancelled_later, unchanged, held_later):
        await deliver(stack, "subscription.active", sub)
    # Then, in Dodo, with every webhook about it lost:
    cancelled_later["status"] = "cancelled"
    held_later["status"] = "on_hold"
    ended_unseen["status"] = "cancelled"

    result = await fake_dodo.reconcile(stack)
    assert result["scanned_by_kind"]["subscription"] == 5
    kinds = sorted((r["id"], r["type"]) for r in result["repaired"])
    assert kinds == sorted([(never["subscription_id"], "subscription.active"),
                            (cancelled_later["subscription_id"], "subscription.cancelled"),
                            (held_later["subscription_id"], "subscription.on_hold")])
    assert {r["kind"] for r in result["repaired"]} == {"subscription"}
    never_item = next(r for r in result["repaired"] if r["id"] == never["subscription_id"])
    assert never_item["metadata"] == never["metadata"]
    for item in result["repaired"]:
        await stack.wait_status(item["event_id"], "processed")

    assert await grants_by_payment(stack) == {
        never["subscription_id"]: ["active"],
        cancelled_later["subscription_id"]: ["revoked"],
        unchanged["subscription_id"]: ["active"],
        held_later["subscription_id"]: ["suspended"],
    }
    [grant] = await entitlements(stack, subscription_id=never["subscription_id"])
    assert (grant["kind"], grant["status"], grant["product_id"]) == ("license_key", "active", KEY_ONLY)

    # Nothing differs any more: a second scan repairs nothing; a later change gets its own event.
    again = await fake_dodo.reconcile(stack, "--since", "7h")
    assert again["repaired"] == []
    held_later["status"] = "active"
    back = await fake_dodo.reconcile(stack, "--since", "7h")
    assert [(r["id"], r["type"]) for r in back["repaired"]] == [
        (held_later["subscription_id"], "subscription.active")]
    await stack.wait_status(back["repaired"][0]["event_id"], "processed")
    assert (await grants_by_payment(stack))[held_later["subscription_id"]] == ["active"]


async def test_subscriptions_bought_long_ago_follow_dodo(
        stack_factory: Any, catalog_path: Path, fake_dodo: FakeApi) -> None:
    """Created long before the window (the windowed list never shows them), granted here: their
    status in Dodo is still checked, for the price of a walk over Dodo's active subscriptions."""
    from datetime import UTC, datetime, timedelta

    made = populate(fake_dodo.fake, payments=0, subscriptions=4, subscription_product_id=KEY_ONLY,
                    now=datetime.now(UTC) - timedelta(days=200), spread=timedelta(days=10))
    cancelled, held, fine, back = made["subscriptions"]
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    for sub in (cancelled, held, fine):
        await deliver(stack, "subscription.active", sub)
    await deliver(stack, "subscription.on_hold", {**back, "status": "on_hold"})
    cancelled["status"], held["status"] = "cancelled", "on_hold"  # webhooks lost

    result = await fake_dodo.reconcile(stack)
    assert sorted((r["id"], r["type"]) for r in result["repaired"]) == sorted([
        (cancelled["subscription_id"], "subscription.cancelled"),
        (held["subscription_id"], "subscription.on_hold"),
        (back["subscription_id"], "subscription.active")])
    for item in result["repaired"]:
        await stack.wait_status(item["event_id"], "processed")
    assert await grants_by_payment(stack) == {
        cancelled["subscription_id"]: ["revoked"], held["subscription_id"]: ["suspended"],
        fine["subscription_id"]: ["active"], back["subscription_id"]: ["active"]}
    # The price: one page of Dodo's active subscriptions, plus a fetch of each of ours that is
    # not active there (and of each repaired one, for its full payload).
    assert fake_dodo.fake.count("/subscriptions", 200) == 2  # the (empty) window, the active ones

    calls = len(fake_dodo.fake.calls)
    again = await fake_dodo.reconcile(stack)
    assert again["repaired"] == []
    assert fake_dodo.fake.count("/subscriptions/" + held["subscription_id"]) >= 1
    # Next time only the one still suspended here and not active in Dodo is fetched.
    assert [c.path for c in fake_dodo.fake.calls[calls:] if c.path.startswith("/subscriptions/")] == [
        "/subscriptions/" + held["subscription_id"]]


async def test_a_granted_subscription_dodo_does_not_know_is_reported_not_found(
        stack_factory: Any, catalog_path: Path, fake_dodo: FakeApi, caplog: Any) -> None:
    """Granted here, 404 at Dodo (deleted, or another business's key): the report's `not_found`
    says so, the log says what it is, and its grants are left as they are."""
    import logging
    from datetime import UTC, datetime, timedelta

    made = populate(fake_dodo.fake, payments=0, subscriptions=1, subscription_product_id=KEY_ONLY,
                    now=datetime.now(UTC) - timedelta(days=200))
    [sub] = made["subscriptions"]
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    await deliver(stack, "subscription.active", sub)
    del fake_dodo.fake.collections["subscriptions"][sub["subscription_id"]]
    fake_dodo.fake._sorted.pop("subscriptions", None)

    caplog.set_level(logging.WARNING)
    result = await fake_dodo.reconcile(stack)
    assert result["not_found"] == [{"kind": "subscription", "id": sub["subscription_id"],
                                    "why": "granted here, but Dodo does not know it"}]
    assert result["repaired"] == []
    assert await grants_by_payment(stack) == {sub["subscription_id"]: ["active"]}
    messages = [r.getMessage() for r in caplog.records]
    assert any(sub["subscription_id"] in m and "Dodo does not know it (404)" in m for m in messages)
    assert not any("although" in m for m in messages)
    # Still true at the next scan: reported again, one fetch each time, grants still untouched.
    again = await fake_dodo.reconcile(stack)
    assert [gone["id"] for gone in again["not_found"]] == [sub["subscription_id"]]
    assert fake_dodo.fake.count("/subscriptions/" + sub["subscription_id"], 404) == 2
    assert await grants_by_payment(stack) == {sub["subscription_id"]: ["active"]}
    # The human summary says the same, not "listed by the API".
    code, _, err = await stack.cli("reconcile", env=fake_dodo.env)
    assert code == 0, err
    assert f"{sub['subscription_id']}: granted here, but Dodo does not know it (404)" in " ".join(err.split())
