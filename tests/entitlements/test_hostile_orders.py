"""Signed orders with awkward values are granted anyway: whatever the inbox stores can be granted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.entitlements.conftest import PRODUCT, entitlements, payment, send_and_wait, write_catalog
from tests.support import Stack
from worker.entitlements.models import GrantRow

LONG_PRODUCT = "pdt_" + "p" * 196  # 200 characters: past the 128 of an id column


@pytest.fixture
async def long_id_stack(stack_factory: Any, tmp_path: Path) -> Stack:
    catalog = write_catalog(tmp_path, extra=f'\n[products.{LONG_PRODUCT}]\nlicense_key = true\n')
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog))
    return stack


async def test_an_order_with_nul_in_the_email_is_granted(ent_stack: Stack) -> None:
    data = payment("pay_nul", [(PRODUCT, 1)], email="buyer\x00@example.com")
    await send_and_wait(ent_stack, "payment.succeeded", data)
    grants = await entitlements(ent_stack, payment_id="pay_nul")
    assert {g["kind"] for g in grants} == {"license_key", "file"}
    assert all(g["email"] == "buyer@example.com" for g in grants)


async def test_an_order_with_a_300_character_name_is_granted(ent_stack: Stack) -> None:
    data = payment("pay_name", [(PRODUCT, 1)], metadata={"note": "a\x00b" + "x" * 600})
    data["customer"]["name"] = "N" * 300
    await send_and_wait(ent_stack, "payment.succeeded", data)
    grants = await entitlements(ent_stack, payment_id="pay_name")
    assert {g["kind"] for g in grants} == {"license_key", "file"}


async def test_an_order_with_200_character_ids_is_granted(long_id_stack: Stack) -> None:
    payment_id, customer_id = "pay_" + "a" * 196, "cus_" + "c" * 196
    data = payment(payment_id, [(LONG_PRODUCT, 2)], customer_id=customer_id)
    data["business_id"] = "bus_" + "b" * 196
    await send_and_wait(long_id_stack, "payment.succeeded", data)
    async with long_id_stack.db.sessions() as session:
        rows = list(await session.scalars(select(GrantRow)))
    assert len(rows) == 2 and all(r.kind == "license_key" and r.status == "active" for r in rows)
    assert {r.payment_id for r in rows} == {payment_id[:128]}  # cut like the inbox's object_id
