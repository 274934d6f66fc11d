"""Custom hooks through the running stack: a paid product's hook URL is told of each grant change,
signed (Standard Webhooks), retried until it answers 2xx, in order, and refused when it points
at a private address; Python hooks (`@on_entitlement`) hear the same changes."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from standardwebhooks import Webhook

from tests.entitlements.conftest import PRODUCT, entitlements, payment, refund, send_and_wait, write_catalog
from tests.entitlements.receiver import HookEndpoint, serve
from tests.support import Stack, wait_until
from worker.entitlements import hooks as python_hooks
from worker.entitlements.delivery import claim
from worker.entitlements.models import DeliveryRow, GrantRow
from worker.signing import generate_secret
from worker.store.models import utcnow

FAST_RETRIES = {"HOOKS_RETRY_BASE_SECONDS": 0.05, "HOOKS_RETRY_MAX_SECONDS": 0.2}
LOCAL_ENDPOINT = {"HOOKS_ALLOW_PRIVATE_NETWORKS": True, "HOOKS_ALLOW_HTTP": True}  # the endpoints: http://127.0.0.1


async def deliveries(stack: Stack) -> list[DeliveryRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(DeliveryRow).order_by(DeliveryRow.created_at)))


async def metrics_show(stack: Stack, *lines: str) -> None:
    """Wait for GET /metrics to show `lines` (the worker flushes its counters every second)."""
    async def shown() -> bool:
        text = (await stack.http.get(f"{stack.base_url}/metrics")).text
        return all(line in text for line in lines)

    await wait_until(shown, what=f"/metrics to show {lines}")


async def hook_stack(stack_factory: Any, tmp_path: Path, url: str, **settings: Any) -> Stack:
    catalog = write_catalog(tmp_path, hooks=[url])
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog), HOOKS_SIGNING_KEY=generate_secret(),
                                       **settings)
    return stack


async def test_hook_fails_twice_then_receives_a_verifiable_signed_call(stack_factory: Any, tmp_path: Path) -> None:
    endpoint = HookEndpoint(fail_first=2)
    async with serve(endpoint) as base:
        stack = await hook_stack(stack_factory, tmp_path, f"{base}/provision", **LOCAL_ENDPOINT,
                                 **FAST_RETRIES)
        await send_and_wait(stack, "payment.succeeded", payment("pay_hook", [(PRODUCT, 1)]))
        grants = {g["id"]: g for g in await entitlements(stack, payment_id="pay_hook")}
        assert len(grants) == 3  # the licence key, the file and the hook itself: each is told

        async def all_delivered() -> bool:
            rows = await deliveries(stack)
            return len(rows) == 3 and all(r.status == "delivered" for r in rows)

        await wait_until(all_delivered, what="both hook deliveries")

    assert stack.settings.HOOKS_SIGNING_KEY is not None
    webhook = Webhook(stack.settings.HOOKS_SIGNING_KEY.get_secret_value())
    received = endpoint.delivered()
    assert len(received) == 3
    for call in received:
        tries = [c.status for c in endpoint.calls if c.headers["webhook-id"] == call.headers["webhook-id"]]
        assert tries == [500, 500, 204]  # the same message id on every try, so receivers can dedupe
        body = webhook.verify(call.body, call.headers)  # raises unless correctly signed
        assert call.path == "/provision"
        assert body["type"] == "entitlement.granted"
        grant = body["data"]
        assert grant["id"] in grants and grant["status"] == "active" and grant["payment_id"] == "pay_hook"
    assert {json.loads(c.body)["data"]["kind"] for c in received} == {"license_key", "file", "hook"}
    rows = await deliveries(stack)
    assert {r.id for r in rows} == {c.headers["webhook-id"] for c in received}
    assert all(r.attempts == 3 and r.delivered_at is not None and r.last_error is None for r in rows)

    await metrics_show(stack, 'dodo_hook_deliveries_total{kind="url",result="delivered"} 3.0',
                       'dodo_hook_deliveries_total{kind="url",result="retry"} 6.0')


async def test_revoked_never_overtakes_granted(stack_factory: Any, tmp_path: Path) -> None:
    endpoint = HookEndpoint(fail_first=2)
    async with serve(endpoint) as base:
        stack = await hook_stack(stack_factory, tmp_path, f"{base}/provision", **LOCAL_ENDPOINT,
                                 **FAST_RETRIES)
        await send_and_wait(stack, "payment.succeeded", payment("pay_order", [(PRODUCT, 1)]))
        await send_and_wait(stack, "refund.succeeded", refund("pay_order", "ref_order"))

        async def all_delivered() -> bool:
            rows = await deliveries(stack)
            return len(rows) == 6 and all(r.status == "delivered" for r in rows)

        await wait_until(all_delivered, what="granted and revoked deliveries")

    by_grant: dict[str, list[str]] = {}
    for call in endpoint.calls:  # every try, failed ones too, in arrival order
        body = json.loads(call.body)
        by_grant.setdefault(body["data"]["id"], []).append(f"{body['type']}:{call.status}")
    assert len(by_grant) == 3
    for seen in by_grant.values():
        assert seen == ["entitlement.granted:500", "entitlement.granted:500", "entitlement.granted:204",
                        "entitlement.revoked:500", "entitlement.revoked:500", "entitlement.revoked:204"]


async def test_private_endpoint_is_refused_and_never_called(stack_factory: Any, tmp_path: Path) -> None:
    endpoint = HookEndpoint()
    async with serve(endpoint) as base:
        stack = await hook_stack(stack_factory, tmp_path, f"{base}/provision?token=s3cret", HOOKS_ALLOW_HTTP=True,
                                 **FAST_RETRIES)
        await send_and_wait(stack, "payment.succeeded", payment("pay_private", [(PRODUCT, 1)]))

        async def all_refused() -> list[DeliveryRow] | None:
            rows = await deliveries(stack)
            return rows if len(rows) == 3 and all(r.status == "refused" for r in rows) else None

        rows = await wait_until(all_refused, what="refused deliveries")
        assert endpoint.calls == []
    assert all(r.attempts == 1 and r.next_attempt_at is None for r in rows)
    assert all(r.last_error == "the host resolves to 127.0.0.1, a loopback address" for r in rows)
    await metrics_show(stack, 'dodo_hook_deliveries_total{kind="url",result="refused"} 3.0')


async def test_python_hook_hears_granted_and_revoked(stack_factory: Any, catalog_path: Path) -> None:
    heard: list[tuple[str, str, str]] = []
    failures = {"left": 1}

    @python_hooks.on_entitlement("entitlement.granted", "entitlement.revoked")
    async def crm_sync(event_type: str, grant: dict[str, Any]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RuntimeError("CRM briefly down")  # retried like a URL hook
        heard.append((event_type, grant["kind"], grant["status"]))

    try:
        stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), **FAST_RETRIES)
        await send_and_wait(stack, "payment.succeeded", payment("pay_py", [(PRODUCT, 1)]))
        await wait_until(lambda: _count(heard, 2), what="granted to reach the Python hook")
        await send_and_wait(stack, "refund.succeeded", refund("pay_py", "ref_py"))
        await wait_until(lambda: _count(heard, 4), what="revoked to reach the Python hook")

        async def all_delivered() -> list[DeliveryRow] | None:
            rows = await deliveries(stack)
            return rows if len(rows) == 4 and all(r.status == "delivered" for r in rows) else None

        rows = await wait_until(all_delivered, what="the outbox to record the Python hook's calls")
    finally:
        python_hooks.remove(f"{crm_sync.__module__}.{crm_sync.__qualname__}")

    assert sorted(heard) == [("entitlement.granted", "file", "active"),
                             ("entitlement.granted", "license_key", "active"),
                             ("entitlement.revoked", "file", "revoked"),
                             ("entitlement.revoked", "license_key", "revoked")]
    assert all(r.target.startswith("python:") for r in rows)
    assert sorted(r.attempts for r in rows) == [1, 1, 1, 2]


async def _count(items: list[Any], n: int) -> bool:
    return len(items) >= n


async def test_a_hook_that_never_succeeds_ends_failed_and_can_be_retried(stack_factory: Any,
                                                                          tmp_path: Path) -> None:
    endpoint = HookEndpoint(fail_first=1_000)
    async with serve(endpoint) as base:
        stack = await hook_stack(stack_factory, tmp_path, f"{base}/provision", **LOCAL_ENDPOINT,
                                 HOOKS_GIVE_UP_HOURS=1.5 / 3600, **FAST_RETRIES)
        await send_and_wait(stack, "payment.succeeded", payment("pay_down", [(PRODUCT, 1)]))

        async def all_failed() -> list[DeliveryRow] | None:
            rows = await deliveries(stack)
            return rows if len(rows) == 3 and all(r.status == "failed" for r in rows) else None

        rows = await wait_until(all_failed, what="deliveries to give up")
        assert all(r.last_error == "HTTP 500" and r.next_attempt_at is None for r in rows)
        assert len(endpoint.calls) == sum(r.attempts for r in rows)

        code, out, _ = await stack.cli("hooks", "list", "--status", "failed", "--json")
        assert code == 0
        listed = json.loads(out)
        assert sorted(d["id"] for d in listed) == sorted(r.id for r in rows)
        assert {d["target"] for d in listed} == {f"{base}/provision"}

        endpoint.fail_first = 0  # the merchant fixed their endpoint
        code, out, _ = await stack.cli("hooks", "retry", "--failed", "--json")
        assert code == 0
        assert sorted(json.loads(out)["retried"]) == sorted(r.id for r in rows)

        async def all_delivered() -> bool:
            rows = await deliveries(stack)
            return all(r.status == "delivered" for r in rows)

        await wait_until(all_delivered, what="the retried deliveries")
        assert len(endpoint.delivered()) == 3
        code, _, err = await stack.cli("hooks", "retry", "dlv_nope")
        assert code == 1 and "no failed or refused delivery dlv_nope" in err


async def test_concurrent_claims_share_nothing_and_keep_order(stack_factory: Any) -> None:
    """Several workers claiming at once get disjoint deliveries (PostgreSQL: SKIP LOCKED; SQLite:
    one writer), and a grant's later message is not claimed while an earlier one is pending.
    (Every row here has one target: its lane is made wide enough for all of them, as lanes are
    the next test's subject. With a narrower lane, a claim locks candidates past its lane until
    it commits, and a claim at that very moment skips them: they go in the next pass.)"""
    stack: Stack = await stack_factory(web=False, worker=False, HOOKS_TARGET_CONCURRENCY=50)
    now = utcnow()
    async with stack.db.sessions() as session, session.begin():
        for g in range(10):
            session.add(GrantRow(id=f"grt_{g}", source="payment", source_id=f"pay_{g}", product_id=PRODUCT,
                                 kind="file", status="active"))
        await session.flush()
        for g in range(10):
            for n, event_type in enumerate(("entitlement.granted", "entitlement.revoked")):
                session.add(DeliveryRow(id=f"dlv_{g}_{n}", grant_id=f"grt_{g}", target="python:x.y",
                                        event_type=event_type, payload="{}", next_attempt_at=now,
                                        created_at=now + timedelta(milliseconds=n)))

    first = await asyncio.gather(*(claim(stack.db, stack.settings) for _ in range(4)))
    ids = [item.id for batch in first for item in batch]
    assert sorted(ids) == sorted(f"dlv_{g}_0" for g in range(10))  # each once; no `revoked` yet
    assert await claim(stack.db, stack.settings) == []  # leased while being sent

    async with stack.db.sessions() as session, session.begin():
        await session.execute(update(DeliveryRow).where(DeliveryRow.id.in_(ids)).values(status="delivered"))
    second = await asyncio.gather(*(claim(stack.db, stack.settings) for _ in range(4)))
    assert sorted(item.id for batch in second for item in batch) == sorted(f"dlv_{g}_1" for g in range(10))


async def test_a_full_lane_is_skipped_so_other_targets_are_claimed(stack_factory: Any) -> None:
    """A target with HOOKS_TARGET_CONCURRENCY deliveries in flight (a hanging endpoint with a
    backlog) gets no more, even when its backlog fills the oldest rows: the others are claimed."""
    stack: Stack = await stack_factory(web=False, worker=False, HOOKS_TARGET_CONCURRENCY=8)
    now = utcnow()
    slow, healthy = "python:slow.hook", "python:healthy.hook"
    async with stack.db.sessions() as session, session.begin():
        for g in range(63):
            session.add(GrantRow(id=f"grt_{g}", source="payment", source_id=f"pay_{g}", product_id=PRODUCT,
                                 kind="file", status="active"))
        await session.flush()
        for g in range(63):  # 60 old ones to the slow target, then 3 to the healthy one
            session.add(DeliveryRow(id=f"dlv_{g:02d}", grant_id=f"grt_{g}", target=slow if g < 60 else healthy,
                                    event_type="entitlement.granted", payload="{}", next_attempt_at=now,
                                    created_at=now + timedelta(milliseconds=g)))

    first = await claim(stack.db, stack.settings)
    assert [item.target for item in first] == [slow] * 8  # its lane, not the whole batch
    second = await claim(stack.db, stack.settings, busy={slow: 8})
    assert sorted(item.id for item in second) == ["dlv_60", "dlv_61", "dlv_62"]
    assert await claim(stack.db, stack.settings, busy={slow: 8, healthy: 3}) == []
    assert len(await claim(stack.db, stack.settings, room=2, busy={slow: 5})) == 2  # room bounds it too
