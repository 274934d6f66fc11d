"""A paid product is granted once, whatever the deliveries, replays and races."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import func, select, update

from tests.entitlements.conftest import (
    CUSTOMER,
    KEY_ONLY,
    PRODUCT,
    entitlements,
    payment,
    send_and_wait,
    send_processed,
)
from tests.support import Stack
from worker.entitlements import keys
from worker.entitlements.catalog import load_catalog
from worker.entitlements.models import AuditRow, DeliveryRow, GrantMetadataRow, GrantRow
from worker.entitlements.payments import on_payment
from worker.entitlements.service import Actor, Grants
from worker.events import Payment
from worker.store import HandlerRunRow, RunStatus
from worker.testing.kit import Dodo


def _stable(grants: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Grants without their download links (a fresh token each time they are listed)."""
    return [{**g, "file": {**g["file"], "download_url": None}} if "file" in g else g for g in grants]


async def _count(stack: Stack | Dodo, model: Any) -> int:
    async with stack.db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_payment_grants_what_the_catalog_lists(dodo: Dodo) -> None:
    paid = await send_processed(dodo, "payment.succeeded",
                                payment("pay_a", [(PRODUCT, 2), (KEY_ONLY, 1), ("pdt_unknown", 3)]))
    event_id = paid.id
    grants = await dodo.grants(payment_id="pay_a")
    kinds = sorted((g["product_id"], g["kind"]) for g in grants)
    # one key per unit (2 + 1), the file once; a product not in the catalog grants nothing
    assert kinds == [(KEY_ONLY, "license_key"), (PRODUCT, "file"), (PRODUCT, "license_key"),
                     (PRODUCT, "license_key")]
    found = [g["license_key"]["key"] for g in grants if g["kind"] == "license_key"]
    assert len(set(found)) == 3
    for key in found:
        body = keys.normalise(key).removeprefix("ACME")
        assert len(body) * 5 >= 128  # at least 128 random bits of base32
    assert all(g["status"] == "active" and g["customer_id"] == CUSTOMER for g in grants)

    async with dodo.db.sessions() as session:
        audit = list(await session.scalars(select(AuditRow)))
        meta = list(await session.scalars(select(GrantMetadataRow)))
    assert {(a.action, a.to_status, a.actor, a.event_id) for a in audit} == {
        ("granted", "active", f"event:{event_id}", event_id)}
    assert len(audit) == 4 and all(a.at is not None for a in audit)
    assert {(m.key, m.value) for m in meta} == {("order_id", "ord_1001"), ("app_user_id", "usr_42")}
    assert len(meta) == 8


async def test_lookup_by_key_accepts_lowercase_without_dashes(dodo: Dodo) -> None:
    await send_processed(dodo, "payment.succeeded", payment("pay_k", [(PRODUCT, 1)]))
    [grant] = [g for g in await dodo.grants(payment_id="pay_k") if g["kind"] == "license_key"]
    typed = grant["license_key"]["key"].replace("-", "").lower()
    async with dodo.db.sessions() as session:
        row = await session.scalar(select(GrantRow).where(GrantRow.license_key_hash == keys.key_hash(typed)))
    assert row is not None and row.id == grant["id"]


async def test_failed_and_subscription_payments_grant_nothing(dodo: Dodo) -> None:
    await send_processed(dodo, "payment.succeeded", payment("pay_f", status="failed"))
    await send_processed(dodo, "payment.succeeded", payment("pay_s", subscription_id="sub_x"))
    assert await _count(dodo, GrantRow) == 0


async def test_same_payment_under_new_webhook_ids_grants_once(dodo: Dodo) -> None:
    first = await send_processed(dodo, "payment.succeeded", payment("pay_d", [(PRODUCT, 1)]))
    before = _stable(await dodo.grants(payment_id="pay_d"))
    second = await send_processed(dodo, "payment.succeeded", payment("pay_d", [(PRODUCT, 1)]))
    assert first.id != second.id
    after = _stable(await dodo.grants(payment_id="pay_d"))
    assert after == before and len(after) == 2
    assert await _count(dodo, AuditRow) == 2  # the second delivery changed nothing


async def test_replayed_event_grants_nothing_new(ent_stack: Stack) -> None:
    event_id = await send_and_wait(ent_stack, "payment.succeeded", payment("pay_r", [(PRODUCT, 1)]))
    before = _stable(await entitlements(ent_stack, payment_id="pay_r"))
    # As if the worker had died before recording the handler's success: the handler runs again.
    async with ent_stack.db.sessions() as session, session.begin():
        await session.execute(update(HandlerRunRow).where(HandlerRunRow.event_id == event_id)
                              .values(status=RunStatus.FAILED))
    code, out, err = await ent_stack.cli("events", "replay", event_id, "--json")
    assert code == 0, err
    assert json.loads(out)["replayed"] == [event_id]
    await ent_stack.wait_status(event_id, "processed")
    runs = await ent_stack.runs(event_id)
    assert runs["entitlements.payment"].attempts == 1 and runs["entitlements.payment"].status == "succeeded"
    assert _stable(await entitlements(ent_stack, payment_id="pay_r")) == before
    assert await _count(ent_stack, AuditRow) == 2


async def test_two_workers_at_once_grant_once(ent_stack: Stack, catalog_path: Any) -> None:
    """Two transactions handle the same payment concurrently (two workers, two deliveries)."""
    catalog = load_catalog(catalog_path)
    data = Payment.model_validate(payment("pay_race", [(PRODUCT, 3)]))

    async def handle(n: int) -> int:
        async with ent_stack.db.sessions() as session, session.begin():
            grants = Grants(session, ent_stack.settings, catalog, Actor.for_event(f"evt_{n}"))
            return await on_payment(grants, data)

    created = await asyncio.gather(*(handle(n) for n in range(4)))
    assert sorted(created) == [0, 0, 0, 4]  # 3 keys and a file, by exactly one of them
    assert await _count(ent_stack, GrantRow) == 4


async def test_python_hooks_get_one_outbox_row_per_change(dodo: Dodo) -> None:
    from worker.entitlements import hooks

    @hooks.on_entitlement("entitlement.granted")
    async def provision(event_type: str, grant: dict[str, Any]) -> None: ...

    try:
        await send_processed(dodo, "payment.succeeded", payment("pay_h", [(PRODUCT, 1)]))
        await send_processed(dodo, "payment.succeeded", payment("pay_h", [(PRODUCT, 1)]))
    finally:
        hooks.remove(f"{provision.__module__}.{provision.__qualname__}")
    async with dodo.db.sessions() as session:
        rows = list(await session.scalars(select(DeliveryRow)))
    assert len(rows) == 2  # the key and the file, once each
    assert {r.target for r in rows} == {f"python:{provision.__module__}.{provision.__qualname__}"}
    assert all(r.event_type == "entitlement.granted" for r in rows)  # then delivered by the hook job
    payloads = [json.loads(r.payload) for r in rows]
    assert {p["data"]["kind"] for p in payloads} == {"license_key", "file"}
    assert all(p["type"] == "entitlement.granted" and p["timestamp"] for p in payloads)


async def test_dodo_issued_key_is_recorded_and_follows_its_payment(dodo: Dodo) -> None:
    from tests.entitlements.conftest import EMAIL, license_key, refund

    await send_processed(dodo, "payment.succeeded", payment("pay_dodo", [(KEY_ONLY, 1)]))
    created = await send_processed(dodo, "license_key.created",
                                   license_key("lic_1", key="db44b22c-fe9b-4a68-bf0d-b0e0d6c6c8c0",
                                               product_id=PRODUCT, payment_id="pay_dodo"))
    await send_processed(dodo, "license_key.created", license_key("lic_1", payment_id="pay_dodo"))
    grants = await dodo.grants(customer_id=CUSTOMER)
    issued = [g for g in grants if g["source"] == "dodo"]
    assert len(issued) == 1
    assert issued[0]["license_key"] == {"key": "db44b22c-fe9b-4a68-bf0d-b0e0d6c6c8c0", "activations_limit": 3,
                                        "activations": 0, "expires_at": None}
    assert (issued[0]["status"], issued[0]["payment_id"], issued[0]["product_id"]) == ("active", "pay_dodo", PRODUCT)
    assert issued[0]["email"] == EMAIL  # borrowed from the payment's own grant
    async with dodo.db.sessions() as session:
        row = await session.scalar(select(GrantRow).where(
            GrantRow.license_key_hash == keys.key_hash("DB44B22CFE9B4A68BF0DB0E0D6C6C8C0")))
    assert row is not None and row.dodo_license_key_id == "lic_1"
    assert created.id

    await send_processed(dodo, "refund.succeeded", refund("pay_dodo", "ref_dodo"))
    assert {g["status"] for g in await dodo.grants(payment_id="pay_dodo")} == {"revoked"}


async def test_hook_urls_get_outbox_rows_only_with_a_signing_key(stack_factory: Any, tmp_path: Any) -> None:
    from tests.entitlements.conftest import write_catalog
    from worker.signing import generate_secret

    url = "https://app.example.com/provision"
    path = write_catalog(tmp_path, hooks=[url])
    signed = await stack_factory(ENTITLEMENTS_FILE=str(path), HOOKS_SIGNING_KEY=generate_secret())
    await send_and_wait(signed, "payment.succeeded", payment("pay_url", [(PRODUCT, 1)]))
    async with signed.db.sessions() as session:
        rows = list(await session.scalars(select(DeliveryRow)))
        grant_kinds = {g.id: g.kind for g in await session.scalars(select(GrantRow))}
    # the key, the file and the hook grant, each told to the product's hook URL once
    assert sorted(grant_kinds[r.grant_id] for r in rows) == ["file", "hook", "license_key"]
    assert {(r.target, r.event_type) for r in rows} == {(url, "entitlement.granted")}
    hook_grant = next(json.loads(r.payload)["data"] for r in rows if grant_kinds[r.grant_id] == "hook")
    assert hook_grant["hook"] == {"url": url}


async def test_without_signing_key_hook_urls_are_not_queued(stack_factory: Any, tmp_path: Any) -> None:
    from tests.entitlements.conftest import write_catalog

    path = write_catalog(tmp_path, hooks=["https://app.example.com/provision"])
    stack = await stack_factory(ENTITLEMENTS_FILE=str(path), HOOKS_SIGNING_KEY=None)
    await send_and_wait(stack, "payment.succeeded", payment("pay_nourl", [(PRODUCT, 1)]))
    assert len(await entitlements(stack, payment_id="pay_nourl")) == 3
    assert await _count(stack, DeliveryRow) == 0


async def test_audit_trail_keeps_its_order_when_only_some_changes_have_hooks(ent_stack: Stack,
                                                                             catalog_path: Any) -> None:
    """Audit rows of changes without hooks wait for the commit; one a hook needs is written at
    once. Within one transaction the trail must still read in the order things happened."""
    from worker.entitlements import hooks
    from worker.entitlements.queries import audit_trail

    @hooks.on_entitlement("entitlement.revoked")
    async def told(event_type: str, grant: dict[str, Any]) -> None: ...

    catalog = load_catalog(catalog_path)
    data = Payment.model_validate(payment("pay_order", [(KEY_ONLY, 1)], metadata={"plan": "pro"}))
    try:
        async with ent_stack.db.sessions() as session, session.begin():
            grants = Grants(session, ent_stack.settings, catalog, Actor.for_event("evt_order"))
            assert await on_payment(grants, data) == 1  # granted: no hook wants it, so it waits
            row = await session.scalar(select(GrantRow).where(GrantRow.payment_id == "pay_order"))
            assert row is not None
            await grants.revoke(row, reason="refund", cause="ref_1", text="refund ref_1")  # hooked: at once
            await grants.reattribute(row, reason="dispute", cause="dp_1", text="now the dispute")  # waits
    finally:
        hooks.remove(f"{told.__module__}.{told.__qualname__}")
    async with ent_stack.db.sessions() as session:
        trail = await audit_trail(session, row.id)
        meta = list(await session.scalars(select(GrantMetadataRow).where(GrantMetadataRow.grant_id == row.id)))
        outbox = list(await session.scalars(select(DeliveryRow)))
    assert [a.action for a in trail] == ["granted", "revoked", "still_revoked"]
    assert [(m.key, m.value) for m in meta] == [("plan", "pro")]
    assert [d.event_type for d in outbox] == ["entitlement.revoked"]
