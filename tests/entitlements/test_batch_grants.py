"""Grants made for many orders in one batch: the batch's plain paid orders get their grants in
one INSERT ahead of the handlers (`payments.prepare_batch`), and the end state is what the
orders would get one at a time: one grant per unit and file, its audit row, its own licence key;
an order whose refund, dispute or repeat is in the same batch is left to its handler."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.entitlements.conftest import PRODUCT, entitlement_handlers, payment, refund
from tests.support import Stack
from worker.dispatch import Outcome, process_events
from worker.entitlements import keys
from worker.entitlements.models import AuditRow, GrantRow, GrantStatus
from worker.events import Event
from worker.registry import Registry
from worker.resources import open_resources
from worker.runtime import Runtime
from worker.store import inbox

PREPARED: list[list[str]] = []  # the events each `prepare` call saw


@pytest.fixture
def registry() -> Registry:
    """The built-in handlers, with their `prepare` watched (to know the events ran as a batch)."""
    fresh = Registry()
    watched: dict[Any, Any] = {}  # one wrapper per `prepare`: the batch calls each once
    for handler in entitlement_handlers():
        prepare = handler.prepare
        if prepare is not None:
            prepare = watched.setdefault(prepare, _watched(prepare))
        fresh.add(handler.func, handler.patterns, name=handler.name, batched=handler.batched, prepare=prepare)
    return fresh


def _watched(prepare: Any) -> Any:
    async def watched(events: list[Event], session: Any) -> None:
        PREPARED.append([event.id for event in events])
        await prepare(events, session)

    return watched


@pytest.fixture
async def runtime(stack_factory: Any, catalog_path: Path, registry: Registry) -> AsyncIterator[tuple[Stack, Runtime]]:
    PREPARED.clear()
    stack = await stack_factory(web=False, worker=False, ENTITLEMENTS_FILE=str(catalog_path))
    rt = Runtime.create(stack.settings, registry)
    await open_resources(rt)
    yield stack, rt
    await rt.close()


async def store(stack: Stack, event_id: str, event_type: str, data: dict[str, Any]) -> str:
    body = json.dumps({"business_id": "bus_test", "type": event_type, "timestamp": "2026-11-23T00:00:00Z",
                       "data": data})
    assert await inbox.insert_event(stack.db, event_id=event_id, event_type=event_type, body=body,
                                    object_id=data.get("refund_id") or data.get("payment_id"))
    return event_id


async def in_one_batch(runtime: Runtime, event_ids: list[str]) -> list[Outcome | BaseException]:
    """Process the events as one batch. The worker's first call starts a batch at once and the
    calls made meanwhile wait for the next one; so a first event of no interest goes ahead."""
    outcomes = await process_events(runtime, ["evt_opener", *event_ids])
    assert [sorted(ids) for ids in PREPARED] == [sorted(event_ids)], "the events ran as one batch"
    return outcomes[1:]


async def grants_and_audit(stack: Stack) -> tuple[list[GrantRow], list[AuditRow]]:
    async with stack.db.sessions() as session:
        grants = list(await session.scalars(select(GrantRow).order_by(GrantRow.payment_id, GrantRow.kind)))
        audit = list(await session.scalars(select(AuditRow).order_by(AuditRow.id)))
    return grants, audit


async def test_a_batch_of_orders_gets_what_each_order_would(runtime) -> None:
    stack, rt = runtime
    await store(stack, "evt_opener", "payment.processing", {})
    ids = [await store(stack, f"evt_order_{n}", "payment.succeeded", payment(f"pay_batch_{n}", [(PRODUCT, 2)]))
           for n in range(12)]

    assert await in_one_batch(rt, ids) == [Outcome("processed")] * 12

    grants, audit = await grants_and_audit(stack)
    assert len(grants) == 12 * 3, "two licence keys (quantity 2) and one file per order"
    assert all(grant.status == GrantStatus.ACTIVE for grant in grants)
    licence_keys = [grant for grant in grants if grant.license_key]
    assert len({grant.license_key for grant in licence_keys}) == 24, "each key its own"
    assert all(keys.key_hash(grant.license_key or "") == grant.license_key_hash for grant in licence_keys)
    assert sorted(row.grant_id for row in audit) == sorted(grant.id for grant in grants)
    assert {(row.action, row.event_id) for row in audit if row.grant_id == grants[0].id} == {
        ("granted", f"evt_order_{grants[0].payment_id.removeprefix('pay_batch_')}")}  # type: ignore[union-attr]


async def test_a_refund_in_the_same_batch_wins_in_either_order(runtime) -> None:
    stack, rt = runtime
    await store(stack, "evt_opener", "payment.processing", {})
    ids = [await store(stack, "evt_pay_a", "payment.succeeded", payment("pay_a")),
           await store(stack, "evt_ref_a", "refund.succeeded", refund("pay_a", "ref_a")),
           await store(stack, "evt_ref_b", "refund.succeeded", refund("pay_b", "ref_b")),
           await store(stack, "evt_pay_b", "payment.succeeded", payment("pay_b")),
           await store(stack, "evt_pay_c", "payment.succeeded", payment("pay_c"))]

    assert await in_one_batch(rt, ids) == [Outcome("processed")] * 5

    grants, _ = await grants_and_audit(stack)
    status = {(grant.payment_id, grant.kind): grant.status for grant in grants}
    assert len(grants) == 6
    assert {s for (pay, _), s in status.items() if pay in ("pay_a", "pay_b")} == {GrantStatus.REVOKED}
    assert {s for (pay, _), s in status.items() if pay == "pay_c"} == {GrantStatus.ACTIVE}


async def test_an_order_seen_twice_or_granted_before_is_granted_once(runtime) -> None:
    stack, rt = runtime
    await store(stack, "evt_opener", "payment.processing", {})
    await store(stack, "evt_first", "payment.succeeded", payment("pay_old"))
    assert await process_events(rt, ["evt_first"]) == [Outcome("processed")]
    before, _ = await grants_and_audit(stack)
    PREPARED.clear()

    ids = [await store(stack, "evt_again", "payment.succeeded", payment("pay_old")),  # granted before
           await store(stack, "evt_twice_1", "payment.succeeded", payment("pay_twice")),
           await store(stack, "evt_twice_2", "payment.succeeded", payment("pay_twice")),  # twice in the batch
           await store(stack, "evt_new", "payment.succeeded", payment("pay_new"))]
    assert await in_one_batch(rt, ids) == [Outcome("processed")] * 4

    grants, audit = await grants_and_audit(stack)
    assert len(grants) == 2 * 3
    assert [g.license_key for g in grants if g.payment_id == "pay_old" and g.license_key] == [
        g.license_key for g in before if g.license_key], "the key granted before is kept"
    assert len(audit) == len(grants), "one `granted` row per grant, none for what existed"


async def test_a_product_twice_in_a_cart_tells_hooks_the_key_that_was_stored(runtime) -> None:
    """Two cart lines of one product plan the same grants twice in the batch's one INSERT; the
    first is stored, and the grant a hook hears of must be that one, not the second plan."""
    from worker.entitlements import hooks
    from worker.entitlements.models import DeliveryRow

    @hooks.on_entitlement("entitlement.granted")
    async def provision(event_type: str, grant: dict[str, Any]) -> None: ...

    stack, rt = runtime
    await store(stack, "evt_opener", "payment.processing", {})
    ids = [await store(stack, "evt_cart_twice", "payment.succeeded", payment("pay_twice_in_cart", [(PRODUCT, 1),
                                                                                                 (PRODUCT, 1)])),
           await store(stack, "evt_cart_other", "payment.succeeded", payment("pay_other"))]
    try:
        assert await in_one_batch(rt, ids) == [Outcome("processed")] * 2
    finally:
        hooks.remove(f"{provision.__module__}.{provision.__qualname__}")

    grants, audit = await grants_and_audit(stack)
    assert len(grants) == 4 and len(audit) == 4, "one licence key and one file per order"
    async with stack.db.sessions() as session:
        payloads = [json.loads(row.payload)["data"] for row in await session.scalars(select(DeliveryRow))]
    told = {p["id"]: p["license_key"]["key"] for p in payloads if p["kind"] == "license_key"}
    assert told == {g.id: g.license_key for g in grants if g.kind == "license_key"}
