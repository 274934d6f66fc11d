"""A paid product is granted once, whatever the deliveries and replays."""

from __future__ import annotations

from sqlalchemy import select

from tests.entitlements.conftest import PRODUCT, payment, send_and_wait
from tests.support import Stack
from worker.entitlements.models import GrantRow


async def _grants(stack: Stack) -> list[GrantRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(GrantRow).order_by(GrantRow.kind)))


async def test_payment_grants_key_and_file(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_a", [(PRODUCT, 1)]))
    rows = await _grants(ent_stack)
    assert [(r.kind, r.status, r.payment_id) for r in rows] == [
        ("file", "active", "pay_a"), ("license_key", "active", "pay_a")]
    key = next(r for r in rows if r.kind == "license_key")
    assert key.license_key and key.license_key.startswith("ACME-")
    assert key.activations_limit == 2
