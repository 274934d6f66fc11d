"""What "every order granted exactly once" means, checked in SQL and over the read API."""

from __future__ import annotations

import asyncio

from tests.faults.procs import FaultStack

KINDS = ("file", "license_key")


async def assert_granted_once(stack: FaultStack, payments: list[str]) -> None:
    """One `fault_grants` row per order, and one active licence key and one file grant per order,
    as both the grants table and GET /v1/entitlements?payment_id= show them."""
    assert await stack.grants() == dict.fromkeys(payments, 1)
    assert await stack.entitlement_grants() == {(p, kind): 1 for p in payments for kind in KINDS}
    gate = asyncio.Semaphore(20)

    async def seen(payment_id: str) -> list[tuple[str, str]]:
        async with gate:
            return sorted((g["kind"], g["status"]) for g in await stack.api_entitlements(payment_id))

    views = await asyncio.gather(*(seen(p) for p in payments))
    assert all(view == [("file", "active"), ("license_key", "active")] for view in views)
