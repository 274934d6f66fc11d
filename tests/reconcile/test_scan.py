"""`dodo-worker reconcile` against the fake Dodo API: what webhooks missed is repaired through the
same handlers, exactly once, and nothing else is touched."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from tests.entitlements.conftest import FILE_ONLY, entitlements
from tests.reconcile.conftest import FakeApi, as_delivered, grants_by_payment
from tests.support import Stack
from worker import Context, Event
from worker.reconcile.models import ReconcileRunRow, ReconcileStateRow
from worker.registry import Registry
from worker.store import EventRow
from worker.testing.fakedodo.data import dispute, populate


class Ledger:
    """A merchant's handlers, counting what they provisioned and revoked."""

    def __init__(self, registry: Registry) -> None:
        self.granted: Counter[str] = Counter()
        self.revoked: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()

        @registry.on("payment.succeeded")
        async def grant(event: Event, ctx: Context) -> None:
            assert event.data.get("product_cart"), "handlers get the full payment, with its cart"
            self.granted[event.data.get("payment_id")] += 1

        @registry.on("refund.succeeded")
        async def revoke(event: Event, ctx: Context) -> None:
            assert event.data.get("customer"), "handlers get the full refund, with its customer"
            self.revoked[event.data.get("payment_id")] += 1

        @registry.on("dispute.lost")
        async def chargeback(event: Event, ctx: Context) -> None:
            self.lost[event.data.get("payment_id")] += 1

        @registry.on("dispute.accepted")
        async def accepted(event: Event, ctx: Context) -> None:
            self.accepted[event.data.get("payment_id")] += 1


async def deliver(stack: Stack, event_type: str, objects: list[dict[str, Any]]) -> list[str]:
    """Send each object as a signed webhook through the real receiver and wait until processed."""
    sent = await asyncio.gather(*(stack.send(event_type, obj) for obj in objects))
    assert {response.status_code for _, response in sent} <= {200}
    ids = [event_id for event_id, _ in sent]
    for event_id in ids:
        await stack.wait_status(event_id, "processed")
    return ids


async def settle(stack: Stack, result: dict[str, Any]) -> None:
    for item in result["repaired"]:
        await stack.wait_status(item["event_id"], "processed")


def parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


async def count_rows(stack: Stack, model: Any) -> int:
    async with stack.db.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_missed_payments_refunds_and_disputes_are_repaired_exactly_once(
        stack_factory: Any, registry: Registry, catalog_path: Path, fake_dodo: FakeApi) -> None:
    ledger = Ledger(registry)
    made = populate(fake_dodo.fake, payments=250, failed=20, refunds=20, disputes=5, product_id=FILE_ONLY)
    paid = [p["payment_id"] for p in made["payments"]]
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    # Webhooks brought 50 of the paid orders and 5 of the refunds; the rest were lost.
    delivered = made["payments"][:200:4]
    await deliver(stack, "payment.succeeded", [as_delivered(p) for p in delivered])
    await deliver(stack, "refund.succeeded", made["refunds"][:5])
    missing = set(paid) - {p["payment_id"] for p in delivered}

    fake_dodo.fake.rate_limit_every, fake_dodo.fake.retry_after = 40, "0.05"  # a 429 now and then
    result = await fake_dodo.reconcile(stack)
    fake_dodo.fake.rate_limit_every = None
    assert sum(1 for c in fake_dodo.fake.calls if c.status == 429) >= 4
    assert result["scanned"] == 250 + 20 + 5
    assert result["scanned_by_kind"] == {"payment": 250, "refund": 20, "dispute": 5, "subscription": 0}
    repaired = {(r["kind"], r["id"]) for r in result["repaired"]}
    assert repaired == ({("payment", p) for p in missing}
                        | {("refund", r["refund_id"]) for r in made["refunds"][5:]}
                        | {("dispute", d["dispute_id"]) for d in made["disputes"]})
    assert len(result["repaired"]) == len(repaired)
    by_id = {r["id"]: r for r in result["repaired"]}
    some = sorted(missing)[-1]  # a paid order kept: not refunded, not disputed
    assert by_id[some]["event_id"] == f"rec_payment.succeeded_{some}"
    assert by_id[some]["metadata"] == {"order_id": "ord_" + some.removeprefix("pay_")}
    refund = made["refunds"][7]
    assert by_id[refund["refund_id"]]["metadata"] == {"order_id": "ord_" + refund["payment_id"][4:]}
    await settle(stack, result)

    # Every paid order has exactly one grant: active, or revoked when Dodo shows a refund or a
    # lost dispute (whether or not its webhook ever came). Failed payments have none.
    taken_back = {r["payment_id"] for r in made["refunds"]} | {d["payment_id"] for d in made["disputes"]}
    assert await grants_by_payment(stack) == {
        p: ["revoked" if p in taken_back else "active"] for p in paid}
    never_delivered_refund = made["refunds"][9]["payment_id"]
    [grant] = await entitlements(stack, payment_id=never_delivered_refund)
    assert (grant["status"], grant["kind"], grant["metadata"]) == (
        "revoked", "file", {"order_id": "ord_" + never_delivered_refund[4:]})
    [grant] = await entitlements(stack, payment_id=some)
    assert (grant["status"], grant["product_id"]) == ("active", FILE_ONLY)
    # The merchant's own handlers ran once per order, refund and lost dispute, with full objects.
    assert ledger.granted == Counter({p: 1 for p in paid})
    assert ledger.revoked == Counter({r["payment_id"]: 1 for r in made["refunds"]})
    assert ledger.lost == Counter({d["payment_id"]: 1 for d in made["disputes"]})
    code, out, _ = await stack.cli("events", "show", by_id[some]["event_id"], "--json")
    shown = json.loads(out)
    assert (code, shown["source"], shown["status"]) == (0, "reconcile", "processed")

    # Cost: 3 pages of payments, and a full fetch only of what was missing.
    assert fake_dodo.fake.count("/payments", 200) == 3
    assert fake_dodo.fetches("payments") == len(missing)
    assert fake_dodo.fetches("refunds") == 15

    # The next scan without --since starts where this one ended, less the overlap: it reads
    # only the recent objects, finds nothing missing, fetches nothing, and handlers see nothing.
    first_until = parse(result["window"]["until"])
    again = await fake_dodo.reconcile(stack)
    since = parse(again["window"]["since"])
    assert since == first_until - timedelta(minutes=stack.settings.RECONCILE_OVERLAP_MINUTES)
    assert again["repaired"] == []
    recent = [o for o in made["payments"] + made["refunds"] + made["disputes"]
              if since <= parse(o["created_at"]) <= parse(again["window"]["until"])]
    assert again["scanned"] == len(recent) < 100
    assert again["api_calls"] == 5  # one short page of each list: the cost follows the window
    # A full rescan of the whole history repairs nothing either.
    full = await fake_dodo.reconcile(stack, "--since", "7h")
    assert (full["scanned"], full["repaired"]) == (275, [])
    assert fake_dodo.fetches("payments") == len(missing)
    assert ledger.granted == Counter({p: 1 for p in paid})
    assert len(await grants_by_payment(stack)) == 250
    assert await count_rows(stack, ReconcileRunRow) == 3
    assert await count_rows(stack, ReconcileStateRow) == 1


async def test_events_in_flight_are_left_alone_and_dead_ones_reported(
        stack_factory: Any, registry: Registry, fake_dodo: FakeApi) -> None:
    made = populate(fake_dodo.fake, payments=3)
    slow, broken, fine = (p["payment_id"] for p in made["payments"])
    release = asyncio.Event()
    runs: Counter[str] = Counter()

    @registry.on("payment.succeeded")
    async def grant(event: Event, ctx: Context) -> None:
        runs[event.data.get("payment_id")] += 1
        if event.data.get("payment_id") == broken:
            raise RuntimeError("licence server down")
        if event.data.get("payment_id") == slow:
            await release.wait()

    stack = await stack_factory(MAX_ATTEMPTS=1)
    slow_id, _ = await stack.send("payment.succeeded", made["payments"][0])
    broken_id, _ = await stack.send("payment.succeeded", made["payments"][1])
    await stack.wait_status(broken_id, "dead")
    await stack.wait_status(slow_id, "processing")

    result = await fake_dodo.reconcile(stack)
    assert [(r["kind"], r["id"]) for r in result["repaired"]] == [("payment", fine)]
    assert result["dead"] == [{"kind": "payment", "id": broken, "event_id": broken_id}]
    assert result["pending"] == 1
    release.set()
    await stack.wait_status(slow_id, "processed")
    await settle(stack, result)
    assert runs == Counter({slow: 1, broken: 1, fine: 1})


async def test_a_rate_limit_is_waited_out(stack_factory: Any, registry: Registry, fake_dodo: FakeApi) -> None:
    ledger = Ledger(registry)
    made = populate(fake_dodo.fake, payments=120)
    stack = await stack_factory()
    fake_dodo.fake.throttle_next(1, retry_after="1")  # the first list page
    first = await fake_dodo.reconcile(stack, "--dry-run")
    assert len(first["repaired"]) == 120
    throttled = [c for c in fake_dodo.fake.calls if c.status == 429]
    after = fake_dodo.fake.calls[fake_dodo.fake.calls.index(throttled[0]) + 1]
    assert after.at - throttled[0].at >= 1.0, "Retry-After was honoured"

    # A longer spell of 429s than the SDK's own retries: still waited out, nothing lost.
    fake_dodo.fake.throttle_next(7, retry_after="0.1")
    result = await fake_dodo.reconcile(stack)
    assert len([c for c in fake_dodo.fake.calls if c.status == 429]) == 8
    assert {r["id"] for r in result["repaired"]} == {p["payment_id"] for p in made["payments"]}
    await settle(stack, result)
    assert ledger.granted == Counter({p["payment_id"]: 1 for p in made["payments"]})


async def test_metadata_repairs_just_that_order(
        stack_factory: Any, registry: Registry, catalog_path: Path, fake_dodo: FakeApi) -> None:
    ledger = Ledger(registry)
    made = populate(fake_dodo.fake, payments=250, refunds=10, product_id=FILE_ONLY)
    order = made["payments"][7]
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))

    result = await fake_dodo.reconcile(stack, "--metadata", "order_id=ord_000007")
    assert result["scanned"] == 260
    assert result["metadata_filter"] == {"order_id": "ord_000007"}
    assert [(r["kind"], r["id"], r["metadata"]) for r in result["repaired"]] == [
        ("payment", order["payment_id"], {"order_id": "ord_000007"}),
        ("refund", made["refunds"][7]["refund_id"], {"order_id": "ord_000007"}),
    ]
    await settle(stack, result)
    # Support finds the order by the merchant's own id: one grant, revoked by its refund.
    [grant] = await entitlements(stack, **{"metadata.order_id": "ord_000007"})
    assert (grant["payment_id"], grant["status"]) == (order["payment_id"], "revoked")
    assert await grants_by_payment(stack) == {order["payment_id"]: ["revoked"]}
    assert ledger.granted == Counter({order["payment_id"]: 1})
    assert await count_rows(stack, EventRow) == 2
    assert fake_dodo.fetches("payments") == 1
    # A narrowed scan leaves the schedule's mark alone: the next full scan covers everything.
    assert await count_rows(stack, ReconcileStateRow) == 0
    missing = await fake_dodo.reconcile(stack, "--metadata", "order_id=no-such-order")
    assert missing["repaired"] == []


async def test_dry_run_changes_nothing(
        stack_factory: Any, registry: Registry, catalog_path: Path, fake_dodo: FakeApi) -> None:
    populate(fake_dodo.fake, payments=120, refunds=3, product_id=FILE_ONLY)
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    dry = await fake_dodo.reconcile(stack, "--dry-run")
    assert dry["dry_run"] is True
    assert len(dry["repaired"]) == 123
    code, out, _ = await stack.cli("events", "list", "--json")
    assert (code, json.loads(out)) == (0, [])
    assert await grants_by_payment(stack) == {}
    assert await count_rows(stack, ReconcileRunRow) == 0
    assert await count_rows(stack, ReconcileStateRow) == 0
    assert fake_dodo.fetches("payments") == fake_dodo.fetches("refunds") == 0

    real = await fake_dodo.reconcile(stack)
    assert real["repaired"] == dry["repaired"]  # the dry run named the very events a real run creates
    await settle(stack, real)
    assert len(await grants_by_payment(stack)) == 120


async def test_scan_visits_every_page_even_when_deep_paging_is_capped(
        stack_factory: Any, registry: Registry, fake_dodo: FakeApi) -> None:
    made = populate(fake_dodo.fake, payments=450)
    fake_dodo.fake.page_number_cap = 1  # pages past 1 answer page 1 again, like Dodo's OFFSET cap
    stack = await stack_factory(web=False, worker=False)
    result = await fake_dodo.reconcile(stack, "--dry-run")
    assert result["scanned_by_kind"]["payment"] == 450
    assert {r["id"] for r in result["repaired"]} == {p["payment_id"] for p in made["payments"]}


async def test_window_starts_at_the_last_mark(stack_factory: Any, registry: Registry, fake_dodo: FakeApi) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    populate(fake_dodo.fake, payments=20, now=now - timedelta(hours=72), spread=timedelta(hours=1))
    stack = await stack_factory(web=False, worker=False)
    first = await fake_dodo.reconcile(stack)
    assert first["scanned"] == 0  # older than the first scan's look-back (48 h)
    mark = datetime.fromisoformat(first["window"]["until"].replace("Z", "+00:00"))
    second = await fake_dodo.reconcile(stack)
    since = datetime.fromisoformat(second["window"]["since"].replace("Z", "+00:00"))
    assert since == mark - timedelta(minutes=stack.settings.RECONCILE_OVERLAP_MINUTES)
    old = await fake_dodo.reconcile(stack, "--since", "4d", "--dry-run")
    assert old["scanned"] == 20 and len(old["repaired"]) == 20


async def test_server_errors_are_retried_and_a_vanished_object_is_skipped(
        stack_factory: Any, registry: Registry, fake_dodo: FakeApi) -> None:
    made = populate(fake_dodo.fake, payments=5)
    vanished = made["payments"][2]["payment_id"]
    fake_dodo.fake.gone.add(vanished)
    stack = await stack_factory(web=False)
    fake_dodo.fake.fail_next(2, status=503)  # the first list page, twice
    result = await fake_dodo.reconcile(stack)
    assert [c.status for c in fake_dodo.fake.calls[:3]] == [503, 503, 200]
    assert result["api_calls"] == len(fake_dodo.fake.calls)  # every request counted, retries too
    assert result["not_found"] == [{"kind": "payment", "id": vanished, "why": "listed, but 404 when fetched"}]
    assert sorted(r["id"] for r in result["repaired"]) == sorted(
        p["payment_id"] for p in made["payments"] if p["payment_id"] != vanished)
    await settle(stack, result)
    # The scan completed, so the mark moved: one vanished object does not pin every later scan.
    assert await count_rows(stack, ReconcileStateRow) == 1


async def test_a_webhook_arriving_after_its_repair_does_not_run_handlers_again(
        stack_factory: Any, registry: Registry, catalog_path: Path, fake_dodo: FakeApi) -> None:
    """Dodo's retries can outlast an outage: the webhook of an order reconciliation already
    repaired still arrives, under its own webhook id. It is stored and shown, but settled as
    `ignored` (naming the repair), so the merchant's handlers hear of the payment once."""
    ledger = Ledger(registry)
    made = populate(fake_dodo.fake, payments=3, refunds=1, product_id=FILE_ONLY)
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    result = await fake_dodo.reconcile(stack)
    await settle(stack, result)
    late_pay, late_ref = made["payments"][1], made["refunds"][0]

    [pay_event] = await deliver_late(stack, "payment.succeeded", as_delivered(late_pay))
    [ref_event] = await deliver_late(stack, "refund.succeeded", late_ref)
    assert ledger.granted == Counter({p["payment_id"]: 1 for p in made["payments"]})
    assert ledger.revoked == Counter({late_ref["payment_id"]: 1})
    code, out, _ = await stack.cli("events", "show", pay_event, "--json")
    shown = json.loads(out)
    assert (code, shown["source"], shown["status"]) == (0, "webhook", "ignored")
    code, out, _ = await stack.cli("events", "list", "--status", "ignored", "--json")
    assert {e["id"] for e in json.loads(out)} == {pay_event, ref_event}
    assert f"rec_payment.succeeded_{late_pay['payment_id']}" in (await stack.event(pay_event)).last_error  # type: ignore[union-attr]


async def deliver_late(stack: Stack, event_type: str, obj: dict[str, Any]) -> list[str]:
    event_id, response = await stack.send(event_type, obj)
    assert response.status_code == 200
    await stack.wait_status(event_id, "processed", "ignored")
    return [event_id]


async def grant_audit(stack: Stack, payment_id: str) -> list[tuple[str, str]]:
    """The one grant of a payment, as `dodo-worker grants show ID --json` shows its audit trail."""
    [grant] = await entitlements(stack, payment_id=payment_id)
    code, out, err = await stack.cli("grants", "show", grant["id"], "--json")
    assert code == 0, err
    return [(a["action"], a["reason"]) for a in json.loads(out)["audit"]]


async def test_a_missed_accepted_dispute_is_repaired_once(
        stack_factory: Any, registry: Registry, catalog_path: Path, fake_dodo: FakeApi) -> None:
    """The merchant accepted a dispute (the money went back) and its webhook was lost: the scan
    reads Dodo's accepted disputes beside the lost ones, and revokes through the same handlers."""
    ledger = Ledger(registry)
    made = populate(fake_dodo.fake, payments=4, product_id=FILE_ONLY)
    accepted_pay, lost_pay, open_pay, kept_pay = (p["payment_id"] for p in made["payments"])
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    await deliver(stack, "payment.succeeded", [as_delivered(p) for p in made["payments"]])
    when = datetime.now(UTC) - timedelta(minutes=10)
    accepted, lost, _ = (fake_dodo.fake.add("disputes", dispute(made["payments"][n], n, created_at=when, status=status))
                         for n, status in enumerate(("dispute_accepted", "dispute_lost", "dispute_opened")))

    result = await fake_dodo.reconcile(stack)
    assert sorted((r["kind"], r["id"], r["type"]) for r in result["repaired"]) == [
        ("dispute", accepted["dispute_id"], "dispute.accepted"), ("dispute", lost["dispute_id"], "dispute.lost")]
    assert result["scanned_by_kind"]["dispute"] == 2  # the opened one is not read
    await settle(stack, result)
    assert await grants_by_payment(stack) == {
        accepted_pay: ["revoked"], lost_pay: ["revoked"], open_pay: ["active"], kept_pay: ["active"]}
    assert await grant_audit(stack, accepted_pay) == [
        ("granted", "granted"), ("revoked", f"dispute {accepted['dispute_id']} (accepted)")]
    assert await grant_audit(stack, lost_pay) == [
        ("granted", "granted"), ("revoked", f"dispute {lost['dispute_id']} (lost)")]
    assert (ledger.accepted, ledger.lost) == (Counter({accepted_pay: 1}), Counter({lost_pay: 1}))

    # A second scan, over the whole history, finds nothing missing and changes nothing.
    again = await fake_dodo.reconcile(stack, "--since", "7h")
    assert (again["repaired"], again["pending"], again["dead"]) == ([], 0, [])
    assert fake_dodo.fetches("disputes") == 2
    assert len(await grant_audit(stack, accepted_pay)) == 2
    assert (ledger.accepted, ledger.lost) == (Counter({accepted_pay: 1}), Counter({lost_pay: 1}))

    # Its webhook, delivered at last, is the same news: stored, settled `ignored`, heard once.
    [late] = await deliver_late(stack, "dispute.accepted", accepted)
    assert (await stack.wait_status(late, "ignored")).source == "webhook"
    assert ledger.accepted == Counter({accepted_pay: 1})


async def test_accepted_disputes_ignored_before_dodo_worker_handled_them_are_repaired(
        stack_factory: Any, registry: Registry, catalog_path: Path, fake_dodo: FakeApi) -> None:
    """Before this version no handler took dispute.accepted: its webhooks settled `ignored` and the
    key stayed valid. A scan over that time repairs such a dispute, once."""
    made = populate(fake_dodo.fake, payments=1, product_id=FILE_ONLY)
    [pay] = made["payments"]
    accepted = fake_dodo.fake.add("disputes", dispute(pay, 0, created_at=datetime.now(UTC) - timedelta(minutes=10),
                                                 status="dispute_accepted"))
    builtin = registry.get("entitlements.dispute")
    assert builtin is not None
    registry.remove(builtin.name)  # the handler as it was: lost and won only
    registry.add(builtin.func, ["dispute.lost", "dispute.won"], name=builtin.name, batched=builtin.batched,
                 prepare=builtin.prepare)
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    await deliver(stack, "payment.succeeded", [as_delivered(pay)])
    [old] = await deliver_late(stack, "dispute.accepted", accepted)
    assert (await stack.wait_status(old, "ignored")).status == "ignored"
    assert await grants_by_payment(stack) == {pay["payment_id"]: ["active"]}
    await stack.stop_worker()  # upgrade: the handler now takes dispute.accepted
    registry.remove(builtin.name)
    registry.add(builtin.func, builtin.patterns, name=builtin.name, batched=builtin.batched, prepare=builtin.prepare)
    await stack.start_worker()

    result = await fake_dodo.reconcile(stack)
    assert [(r["id"], r["type"]) for r in result["repaired"]] == [(accepted["dispute_id"], "dispute.accepted")]
    await settle(stack, result)
    assert await grants_by_payment(stack) == {pay["payment_id"]: ["revoked"]}
    again = await fake_dodo.reconcile(stack, "--since", "7h")
    assert (again["repaired"], again["pending"]) == ([], 0)
    assert len(await grant_audit(stack, pay["payment_id"])) == 2
