"""Money back means access gone: full refunds revoke, partial ones keep, disputes take and give
back, and a revocation that arrives before its payment still wins."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.entitlements.conftest import (
    FILE_ONLY,
    PRODUCT,
    dispute,
    entitlements,
    payment,
    refund,
    refund_item,
    send_and_wait,
    write_catalog,
)
from tests.support import Stack
from worker.entitlements.models import AuditRow
from worker.testing.kit import Dodo


def _statuses(grants: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return sorted((g["kind"], g["status"], g["status_reason"]) for g in grants)


async def _audit(stack: Stack | Dodo, grant_id: str) -> list[AuditRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(AuditRow).where(AuditRow.grant_id == grant_id)
                                          .order_by(AuditRow.id)))


async def test_partial_refund_keeps_full_refund_revokes(dodo: Dodo) -> None:
    await send_and_wait(dodo, "payment.succeeded", payment("pay_1", [(PRODUCT, 1)]))
    await send_and_wait(dodo, "refund.succeeded", refund("pay_1", "ref_p", is_partial=True, amount=500))
    assert _statuses(await entitlements(dodo, payment_id="pay_1")) == [
        ("file", "active", None), ("license_key", "active", None)]

    full = await send_and_wait(dodo, "refund.succeeded", refund("pay_1", "ref_f", is_partial=False))
    grants = await entitlements(dodo, payment_id="pay_1")
    assert _statuses(grants) == [("file", "revoked", "refund"), ("license_key", "revoked", "refund")]
    file = next(g for g in grants if g["kind"] == "file")
    assert file["file"]["download_url"] is None
    trail = await _audit(dodo, file["id"])
    assert [(a.action, a.from_status, a.to_status) for a in trail] == [
        ("granted", None, "active"), ("revoked", "active", "revoked")]
    assert trail[1].actor == f"event:{full}" and trail[1].event_id == full
    assert "ref_f" in (trail[1].reason or "")


async def test_failed_refund_revokes_nothing(dodo: Dodo) -> None:
    await send_and_wait(dodo, "payment.succeeded", payment("pay_2", [(PRODUCT, 1)]))
    await send_and_wait(dodo, "refund.succeeded", refund("pay_2", "ref_x", status="failed"))
    assert {g["status"] for g in await entitlements(dodo, payment_id="pay_2")} == {"active"}


async def test_catalog_can_revoke_on_partial_refund(stack_factory: Any, tmp_path: Path) -> None:
    extra = '\n[products.pdt_strict]\nfiles = ["files/guide.pdf"]\nrevoke_on_partial_refund = true\n'
    stack = await stack_factory(ENTITLEMENTS_FILE=str(write_catalog(tmp_path, extra=extra)))
    await send_and_wait(stack, "payment.succeeded", payment("pay_3", [(PRODUCT, 1), ("pdt_strict", 1)]))
    await send_and_wait(stack, "refund.succeeded", refund("pay_3", "ref_p3", is_partial=True))
    grants = await entitlements(stack, payment_id="pay_3")
    assert sorted((g["product_id"], g["kind"], g["status"]) for g in grants) == [
        (PRODUCT, "file", "active"), (PRODUCT, "license_key", "active"), ("pdt_strict", "file", "revoked")]


async def test_refund_before_payment_payload_shows_no_refund(dodo: Dodo) -> None:
    """The refund arrives first; the late payment payload does not mention it."""
    refund_event = await send_and_wait(dodo, "refund.succeeded", refund("pay_4", "ref_4"))
    assert await entitlements(dodo, payment_id="pay_4") == []
    pay_event = await send_and_wait(dodo, "payment.succeeded", payment("pay_4", [(PRODUCT, 1)]))
    grants = await entitlements(dodo, payment_id="pay_4")
    assert _statuses(grants) == [("file", "revoked", "refund"), ("license_key", "revoked", "refund")]
    trail = await _audit(dodo, grants[0]["id"])
    assert [(a.action, a.to_status, a.event_id) for a in trail] == [("granted", "revoked", pay_event)]
    assert "ref_4" in (trail[0].reason or "") and "before" in (trail[0].reason or "")
    assert refund_event != pay_event


async def test_refund_before_payment_payload_shows_the_refund(dodo: Dodo) -> None:
    """No refund event at all: the payment payload (latest state) says it was refunded."""
    await send_and_wait(dodo, "payment.succeeded",
                        payment("pay_5", [(PRODUCT, 1)], refund_status="full"))
    await send_and_wait(dodo, "payment.succeeded",
                        payment("pay_6", [(FILE_ONLY, 1)], refund_status="full",
                                refunds=[refund_item("ref_6", payment_id="pay_6")]))
    await send_and_wait(dodo, "payment.succeeded",
                        payment("pay_7", [(FILE_ONLY, 1)], refund_status="partial",
                                refunds=[refund_item("ref_7", payment_id="pay_7", is_partial=True)]))
    assert {g["status"] for g in await entitlements(dodo, payment_id="pay_5")} == {"revoked"}
    assert _statuses(await entitlements(dodo, payment_id="pay_6")) == [("file", "revoked", "refund")]
    assert _statuses(await entitlements(dodo, payment_id="pay_7")) == [("file", "active", None)]


async def test_payment_payload_showing_a_refund_revokes_existing_grants(dodo: Dodo) -> None:
    await send_and_wait(dodo, "payment.succeeded", payment("pay_8", [(FILE_ONLY, 1)]))
    await send_and_wait(dodo, "payment.succeeded", payment("pay_8", [(FILE_ONLY, 1)], refund_status="full"))
    assert _statuses(await entitlements(dodo, payment_id="pay_8")) == [("file", "revoked", "refund")]


async def test_dispute_lost_then_won(dodo: Dodo) -> None:
    await send_and_wait(dodo, "payment.succeeded", payment("pay_9", [(PRODUCT, 1)]))
    lost = await send_and_wait(dodo, "dispute.lost", dispute("pay_9", "dp_9", status="dispute_lost"))
    assert _statuses(await entitlements(dodo, payment_id="pay_9")) == [
        ("file", "revoked", "dispute"), ("license_key", "revoked", "dispute")]
    won = await send_and_wait(dodo, "dispute.won", dispute("pay_9", "dp_9", status="dispute_won"))
    grants = await entitlements(dodo, payment_id="pay_9")
    assert _statuses(grants) == [("file", "active", None), ("license_key", "active", None)]
    key = next(g for g in grants if g["kind"] == "license_key")
    trail = await _audit(dodo, key["id"])
    assert [(a.action, a.to_status, a.event_id) for a in trail][1:] == [
        ("revoked", "revoked", lost), ("restored", "active", won)]


async def test_dispute_won_does_not_undo_a_refund(dodo: Dodo) -> None:
    await send_and_wait(dodo, "payment.succeeded", payment("pay_10", [(FILE_ONLY, 1)]))
    await send_and_wait(dodo, "refund.succeeded", refund("pay_10", "ref_10"))
    await send_and_wait(dodo, "dispute.lost", dispute("pay_10", "dp_10"))
    await send_and_wait(dodo, "dispute.won", dispute("pay_10", "dp_10", status="dispute_won"))
    assert _statuses(await entitlements(dodo, payment_id="pay_10")) == [("file", "revoked", "refund")]

    # Lost first, then refunded, then won: still revoked, now because of the refund.
    await send_and_wait(dodo, "payment.succeeded", payment("pay_11", [(FILE_ONLY, 1)]))
    await send_and_wait(dodo, "dispute.lost", dispute("pay_11", "dp_11"))
    await send_and_wait(dodo, "refund.succeeded", refund("pay_11", "ref_11"))
    await send_and_wait(dodo, "dispute.won", dispute("pay_11", "dp_11", status="dispute_won"))
    assert _statuses(await entitlements(dodo, payment_id="pay_11")) == [("file", "revoked", "refund")]


async def test_dispute_before_payment_and_late_lost_event_showing_won(dodo: Dodo) -> None:
    await send_and_wait(dodo, "dispute.lost", dispute("pay_12", "dp_12"))
    await send_and_wait(dodo, "payment.succeeded", payment("pay_12", [(FILE_ONLY, 1)]))
    assert _statuses(await entitlements(dodo, payment_id="pay_12")) == [("file", "revoked", "dispute")]
    # dispute.lost delivered late carries the latest state (won): what it says wins.
    await send_and_wait(dodo, "dispute.lost", dispute("pay_12", "dp_12", status="dispute_won"))
    assert _statuses(await entitlements(dodo, payment_id="pay_12")) == [("file", "active", None)]


async def _validate(stack: Stack | Dodo, key: str) -> bool:
    """What the customer's app asks: is this licence key still valid?"""
    response = await stack.http.post(f"{stack.url}/v1/licenses/validate", json={"license_key": key})
    assert response.status_code == 200, response.text
    return bool(response.json()["valid"])


async def _revocations(stack: Stack | Dodo, grant_id: str) -> list[str | None]:
    """The reasons of the grant's `revoked` audit rows (what `dodo-worker grants show` lists)."""
    return [a.reason for a in await _audit(stack, grant_id) if a.action == "revoked"]


async def test_dispute_accepted_revokes_with_its_own_reason(dodo: Dodo) -> None:
    """Accepting a dispute gives the money back, as losing one does: the key stops working, and the
    audit trail says which of the two it was."""
    for payment_id in ("pay_20", "pay_21"):
        await send_and_wait(dodo, "payment.succeeded", payment(payment_id, [(PRODUCT, 1)]))
    key = next(g for g in await entitlements(dodo, payment_id="pay_20") if g["kind"] == "license_key")
    assert await _validate(dodo, key["license_key"]["key"])

    accepted = await send_and_wait(dodo, "dispute.accepted",
                                   dispute("pay_20", "dp_20", status="dispute_accepted"))
    await send_and_wait(dodo, "dispute.lost", dispute("pay_21", "dp_21", status="dispute_lost"))

    assert _statuses(await entitlements(dodo, payment_id="pay_20")) == [
        ("file", "revoked", "dispute"), ("license_key", "revoked", "dispute")]
    assert not await _validate(dodo, key["license_key"]["key"])
    trail = await _audit(dodo, key["id"])
    assert [(a.action, a.to_status, a.event_id) for a in trail][1:] == [("revoked", "revoked", accepted)]
    assert trail[1].reason == "dispute dp_20 (accepted)"
    lost_key = next(g for g in await entitlements(dodo, payment_id="pay_21") if g["kind"] == "license_key")
    assert await _revocations(dodo, lost_key["id"]) == ["dispute dp_21 (lost)"]


async def test_dispute_accepted_before_its_payment(dodo: Dodo) -> None:
    await send_and_wait(dodo, "dispute.accepted", dispute("pay_22", "dp_22", status="dispute_accepted"))
    assert await entitlements(dodo, payment_id="pay_22") == []
    pay_event = await send_and_wait(dodo, "payment.succeeded", payment("pay_22", [(PRODUCT, 1)]))
    grants = await entitlements(dodo, payment_id="pay_22")
    assert _statuses(grants) == [("file", "revoked", "dispute"), ("license_key", "revoked", "dispute")]
    key = next(g for g in grants if g["kind"] == "license_key")
    assert not await _validate(dodo, key["license_key"]["key"])
    [granted] = await _audit(dodo, key["id"])
    assert (granted.action, granted.to_status, granted.event_id) == ("granted", "revoked", pay_event)
    assert granted.reason == "granted revoked: dispute dp_22 (accepted) was seen before the grant"


async def test_dispute_accepted_twice_revokes_once(dodo: Dodo) -> None:
    """Dodo's retries (new webhook ids), a late payment payload listing the dispute: one revocation."""
    await send_and_wait(dodo, "payment.succeeded", payment("pay_23", [(FILE_ONLY, 1)]))
    first = await send_and_wait(dodo, "dispute.accepted", dispute("pay_23", "dp_23", status="dispute_accepted"))
    await send_and_wait(dodo, "dispute.accepted", dispute("pay_23", "dp_23", status="dispute_accepted"))
    listed = [{"dispute_id": "dp_23", "payment_id": "pay_23", "dispute_status": "dispute_accepted"}]
    await send_and_wait(dodo, "payment.succeeded", payment("pay_23", [(FILE_ONLY, 1)], disputes=listed))
    [grant] = await entitlements(dodo, payment_id="pay_23")
    assert (grant["status"], grant["status_reason"]) == ("revoked", "dispute")
    trail = await _audit(dodo, grant["id"])
    assert [(a.action, a.event_id) for a in trail][1:] == [("revoked", first)]


async def test_payment_payload_showing_an_accepted_dispute_grants_revoked(dodo: Dodo) -> None:
    """No dispute event at all: the payment payload (its latest state) lists the accepted dispute."""
    listed = [{"dispute_id": "dp_24", "payment_id": "pay_24", "dispute_status": "dispute_accepted"}]
    await send_and_wait(dodo, "payment.succeeded", payment("pay_24", [(FILE_ONLY, 1)], disputes=listed))
    [grant] = await entitlements(dodo, payment_id="pay_24")
    assert (grant["status"], grant["status_reason"]) == ("revoked", "dispute")
    [granted] = await _audit(dodo, grant["id"])
    assert "dp_24 (accepted)" in (granted.reason or "")


async def test_dispute_accepted_is_final_in_any_order(dodo: Dodo) -> None:
    """Dodo cannot turn an accepted dispute into a won one, but if news said so, in either order,
    the access stays revoked: the money went back."""
    await send_and_wait(dodo, "payment.succeeded", payment("pay_25", [(FILE_ONLY, 1)]))
    await send_and_wait(dodo, "dispute.accepted", dispute("pay_25", "dp_25", status="dispute_accepted"))
    await send_and_wait(dodo, "dispute.won", dispute("pay_25", "dp_25", status="dispute_won"))

    await send_and_wait(dodo, "payment.succeeded", payment("pay_26", [(FILE_ONLY, 1)]))
    await send_and_wait(dodo, "dispute.won", dispute("pay_26", "dp_26", status="dispute_won"))
    await send_and_wait(dodo, "dispute.accepted", dispute("pay_26", "dp_26", status="dispute_accepted"))

    for payment_id, dispute_id in (("pay_25", "dp_25"), ("pay_26", "dp_26")):
        [grant] = await entitlements(dodo, payment_id=payment_id)
        assert (grant["status"], grant["status_reason"]) == ("revoked", "dispute")
        assert await _revocations(dodo, grant["id"]) == [f"dispute {dispute_id} (accepted)"]
        assert [a.action for a in await _audit(dodo, grant["id"])] == ["granted", "revoked"]
