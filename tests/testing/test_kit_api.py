"""The kit's API used in-process by this project's own tests: make_event, sign and the deep merge;
replay, reconciliation against the fake Dodo API, and the clean-up of a shared Redis."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from tests.entitlements.conftest import PRODUCT, write_catalog
from tests.testing import flaky_handlers
from worker.testing import TEST_SECRET, deep_merge, make_event, sign
from worker.testing.kit import start
from worker.verify import Verifier


def test_deep_merge_merges_dicts_and_replaces_lists() -> None:
    base = {"customer": {"email": "a@x", "name": "A"}, "product_cart": [{"product_id": "p1"}], "n": 1}
    merged = deep_merge(base, {"customer": {"email": "b@x"}, "product_cart": [{"product_id": "p2"}]})
    assert merged == {"customer": {"email": "b@x", "name": "A"}, "product_cart": [{"product_id": "p2"}], "n": 1}
    assert base["customer"] == {"email": "a@x", "name": "A"}  # not modified


def test_make_event_is_the_sample_with_overrides_merged_in() -> None:
    event = make_event("payment.succeeded", id="msg_1", metadata={"order_id": "ord_9"},
                       customer={"email": "b@example.com"})
    assert (event.id, event.type) == ("msg_1", "payment.succeeded")
    assert event.data.metadata == {"order_id": "ord_9", "app_user_id": "usr_42"}  # merged into the sample's
    assert event.data.customer is not None and event.data.customer.email == "b@example.com"
    assert event.data.customer.customer_id == "cus_8VbC6JDZzPEqfBPUdpj0K"  # the sample's, kept
    assert event.data.product_cart is not None
    assert event.data.product_cart[0].product_id == "pdt_e9mUw084cWnu0tz"


def test_sign_makes_headers_the_receiver_verifies() -> None:
    body = {"type": "payment.succeeded", "data": {}}
    headers = sign(body, id="msg_42")
    assert headers["webhook-id"] == "msg_42"
    Verifier([TEST_SECRET]).verify(json.dumps(body).encode(), headers)
    other = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVowMTIzNDU="
    Verifier([other]).verify(b"raw", sign(b"raw", secret=other))


@pytest.mark.parametrize("dodo_settings", [{"HANDLER_MODULES": "tests.testing.flaky_handlers",
                                            "MAX_ATTEMPTS": 1}])
async def test_replay_runs_a_dead_event_again_and_keeps_its_history(dodo: Any) -> None:
    flaky_handlers.STATE["fail"] = True
    dead = await dodo.send("dispute.opened")
    assert dead.status == "dead"
    flaky_handlers.STATE["fail"] = False
    try:
        replayed = await dodo.replay(dead.id)
    finally:
        flaky_handlers.STATE["fail"] = True
    assert replayed.status == "processed", replayed
    runs = replayed.handler("flaky")["runs"]
    assert [r["status"] for r in runs] == ["dead", "succeeded"]
    assert (await dodo.event(dead.id)).status == "processed"


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    return write_catalog(tmp_path / "shop")


async def test_reconcile_grants_the_payment_whose_webhook_never_came(catalog: Path, tmp_path: Path,
                                                                     redis_url: str) -> None:
    given = {"ENTITLEMENTS_FILE": str(catalog), "REDIS_URL": redis_url}
    async with start(given, tmp_path, _no_shared_redis) as dodo:
        missed = dodo.fake_api.add_payment(metadata={"order_id": "ord_lost"})
        assert missed["product_cart"] == [{"product_id": "pdt_fake_ebook", "quantity": 1}]
        missed["product_cart"] = [{"product_id": PRODUCT, "quantity": 1}]
        report = await dodo.reconcile(since=datetime.now(UTC) - timedelta(hours=1))
        assert [(r["kind"], r["id"]) for r in report["repaired"]] == [("payment", missed["payment_id"])]
        grants = await dodo.grants(payment_id=missed["payment_id"])
        assert {g["kind"] for g in grants} == {"license_key", "file"}
        assert all(g["status"] == "active" and g["metadata"]["order_id"] == "ord_lost" for g in grants)


def test_the_fake_apis_helpers_link_refunds_and_disputes_to_their_payment() -> None:
    from worker.testing.fakedodo import FakeDodo

    fake = FakeDodo()
    paid = fake.add_payment(customer={"email": "b@example.com"})
    refund = fake.add_refund(paid, is_partial=True)
    dispute = fake.add_dispute(paid, dispute_status="dispute_won")
    sub = fake.add_subscription(status="on_hold")
    assert paid["customer"]["email"] == "b@example.com" and paid["customer"]["customer_id"].startswith("cus_")
    assert [r["refund_id"] for r in paid["refunds"]] == [refund["refund_id"]]
    assert (refund["payment_id"], refund["is_partial"]) == (paid["payment_id"], True)
    assert (dispute["payment_id"], dispute["dispute_status"]) == (paid["payment_id"], "dispute_won")
    assert sub["status"] == "on_hold"
    assert len({paid["payment_id"], refund["refund_id"], dispute["dispute_id"], sub["subscription_id"]}) == 4


def _no_shared_redis() -> Any:
    raise AssertionError("REDIS_URL was given: the kit must not start an embedded Redis")


async def test_a_given_redis_gets_a_queue_of_its_own_and_is_cleaned_after(redis_url: str, tmp_path: Path) -> None:
    async with start({"REDIS_URL": redis_url}, tmp_path, _no_shared_redis) as dodo:
        event = await dodo.send("payment.succeeded", id="msg_kit_cleanup")
        assert event.status == "ignored"
        queue = dodo.settings.QUEUE_NAME
    client = Redis.from_url(redis_url)
    try:
        left = [k async for k in client.scan_iter(match=f"*{queue}*")]
        left += [k async for k in client.scan_iter(match="arq:*:msg_kit_cleanup")]
    finally:
        await client.aclose()
    assert left == []
