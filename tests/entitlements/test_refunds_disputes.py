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


def _statuses(grants: list[dict[str, Any]]) -> list[tuple[str, str, str | None]]:
    return sorted((g["kind"], g["status"], g["status_reason"]) for g in grants)


async def _audit(stack: Stack, grant_id: str) -> list[AuditRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(AuditRow).where(AuditRow.grant_id == grant_id)
                                          .order_by(AuditRow.id)))


async def test_partial_refund_keeps_full_refund_revokes(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_1", [(PRODUCT, 1)]))
    await send_and_wait(ent_stack, "refund.succeeded", refund("pay_1", "ref_p", is_partial=True, amount=500))
    assert _statuses(await entitlements(ent_stack, payment_id="pay_1")) == [
        ("file", "active", None), ("license_key", "active", None)]

    full = await send_and_wait(ent_stack, "refund.succeeded", refund("pay_1", "ref_f", is_partial=False))
    grants = await entitlements(ent_stack, payment_id="pay_1")
    assert _statuses(grants) == [("file", "revoked", "refund"), ("license_key", "revoked", "refund")]
    file = next(g for g in grants if g["kind"] == "file")
    assert file["file"]["download_url"] is None
    trail = await _audit(ent_stack, file["id"])
    assert [(a.action, a.from_status, a.to_status) for a in trail] == [
        ("granted", None, "active"), ("revoked", "active", "revoked")]
    assert trail[1].actor == f"event:{full}" and trail[1].event_id == full
    assert "ref_f" in (trail[1].reason or "")


async def test_failed_refund_revokes_nothing(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_2", [(PRODUCT, 1)]))
    await send_and_wait(ent_stack, "refund.succeeded", refund("pay_2", "ref_x", status="failed"))
    assert {g["status"] for g in await entitlements(ent_stack, payment_id="pay_2")} == {"active"}


async def test_catalog_can_revoke_on_partial_refund(stack_factory: Any, tmp_path: Path) -> None:
    extra = '\n[products.pdt_strict]\nfiles = ["files/guide.pdf"]\nrevoke_on_partial_refund = true\n'
    stack = await stack_factory(ENTITLEMENTS_FILE=str(write_catalog(tmp_path, extra=extra)))
    await send_and_wait(stack, "payment.succeeded", payment("pay_3", [(PRODUCT, 1), ("pdt_strict", 1)]))
    await send_and_wait(stack, "refund.succeeded", refund("pay_3", "ref_p3", is_partial=True))
    grants = await entitlements(stack, payment_id="pay_3")
    assert sorted((g["product_id"], g["kind"], g["status"]) for g in grants) == [
        (PRODUCT, "file", "active"), (PRODUCT, "license_key", "active"), ("pdt_strict", "file", "revoked")]


async def test_refund_before_payment_payload_shows_no_refund(ent_stack: Stack) -> None:
    """The refund arrives first; the late payment payload does not mention it."""
    refund_event = await send_and_wait(ent_stack, "refund.succeeded", refund("pay_4", "ref_4"))
    assert await entitlements(ent_stack, payment_id="pay_4") == []
    pay_event = await send_and_wait(ent_stack, "payment.succeeded", payment("pay_4", [(PRODUCT, 1)]))
    grants = await entitlements(ent_stack, payment_id="pay_4")
    assert _statuses(grants) == [("file", "revoked", "refund"), ("license_key", "revoked", "refund")]
    trail = await _audit(ent_stack, grants[0]["id"])
    assert [(a.action, a.to_status, a.event_id) for a in trail] == [("granted", "revoked", pay_event)]
    assert "ref_4" in (trail[0].reason or "") and "before" in (trail[0].reason or "")
    assert refund_event != pay_event


async def test_refund_before_payment_payload_shows_the_refund(ent_stack: Stack) -> None:
    """No refund event at all: the payment payload (latest state) says it was refunded."""
    await send_and_wait(ent_stack, "payment.succeeded",
                        payment("pay_5", [(PRODUCT, 1)], refund_status="full"))
    await send_and_wait(ent_stack, "payment.succeeded",
                        payment("pay_6", [(FILE_ONLY, 1)], refund_status="full",
                                refunds=[refund_item("ref_6", payment_id="pay_6")]))
    await send_and_wait(ent_stack, "payment.succeeded",
                        payment("pay_7", [(FILE_ONLY, 1)], refund_status="partial",
                                refunds=[refund_item("ref_7", payment_id="pay_7", is_partial=True)]))
    assert {g["status"] for g in await entitlements(ent_stack, payment_id="pay_5")} == {"revoked"}
    assert _statuses(await entitlements(ent_stack, payment_id="pay_6")) == [("file", "revoked", "refund")]
    assert _statuses(await entitlements(ent_stack, payment_id="pay_7")) == [("file", "active", None)]


async def test_payment_payload_showing_a_refund_revokes_existing_grants(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_8", [(FILE_ONLY, 1)]))
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_8", [(FILE_ONLY, 1)], refund_status="full"))
    assert _statuses(await entitlements(ent_stack, payment_id="pay_8")) == [("file", "revoked", "refund")]


async def test_dispute_lost_then_won(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_9", [(PRODUCT, 1)]))
    lost = await send_and_wait(ent_stack, "dispute.lost", dispute("pay_9", "dp_9", status="dispute_lost"))
    assert _statuses(await entitlements(ent_stack, payment_id="pay_9")) == [
        ("file", "revoked", "dispute"), ("license_key", "revoked", "dispute")]
    won = await send_and_wait(ent_stack, "dispute.won", dispute("pay_9", "dp_9", status="dispute_won"))
    grants = await entitlements(ent_stack, payment_id="pay_9")
    assert _statuses(grants) == [("file", "active", None), ("license_key", "active", None)]
    key = next(g for g in grants if g["kind"] == "license_key")
    trail = await _audit(ent_stack, key["id"])
    assert [(a.action, a.to_status, a.event_id) for a in trail][1:] == [
        ("revoked", "revoked", lost), ("restored", "active", won)]


async def test_dispute_won_does_not_undo_a_refund(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_10", [(FILE_ONLY, 1)]))
    await send_and_wait(ent_stack, "refund.succeeded", refund("pay_10", "ref_10"))
    await send_and_wait(ent_stack, "dispute.lost", dispute("pay_10", "dp_10"))
    await send_and_wait(ent_stack, "dispute.won", dispute("pay_10", "dp_10", status="dispute_won"))
    assert _statuses(await entitlements(ent_stack, payment_id="pay_10")) == [("file", "revoked", "refund")]

    # Lost first, then refunded, then won: still revoked, now because of the refund.
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_11", [(FILE_ONLY, 1)]))
    await send_and_wait(ent_stack, "dispute.lost", dispute("pay_11", "dp_11"))
    await send_and_wait(ent_stack, "refund.succeeded", refund("pay_11", "ref_11"))
    await send_and_wait(ent_stack, "dispute.won", dispute("pay_11", "dp_11", status="dispute_won"))
    assert _statuses(await entitlements(ent_stack, payment_id="pay_11")) == [("file", "revoked", "refund")]


async def test_dispute_before_payment_and_late_lost_event_showing_won(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "dispute.lost", dispute("pay_12", "dp_12"))
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_12", [(FILE_ONLY, 1)]))
    assert _statuses(await entitlements(ent_stack, payment_id="pay_12")) == [("file", "revoked", "dispute")]
    # dispute.lost delivered late carries the latest state (won): what it says wins.
    await send_and_wait(ent_stack, "dispute.lost", dispute("pay_12", "dp_12", status="dispute_won"))
    assert _statuses(await entitlements(ent_stack, payment_id="pay_12")) == [("file", "active", None)]
