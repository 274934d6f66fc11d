"""The hooks page in Chromium: a delivery that gave up on a failing endpoint is listed as failed,
and "Retry" once the endpoint is mended delivers it."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.browser.stack import HOOKED, ConsoleStack
from tests.entitlements.receiver import HookEndpoint
from tests.support import wait_until


async def test_a_failed_delivery_is_listed_and_retry_delivers_it(page: Any, console: ConsoleStack,
                                                              hook_endpoint: tuple[HookEndpoint, str]) -> None:
    endpoint, _ = hook_endpoint
    event_id, payment_id, _ = await console.pay(email="erin@example.com", product=HOOKED)
    await console.wait_status(event_id, "processed")
    grant_ids = {g["id"] for g in await console.api_entitlements(payment_id)}

    async def gave_up() -> bool:
        statuses = await console.delivery_statuses(grant_ids)
        return bool(statuses) and set(statuses) == {"failed"}

    await wait_until(gave_up, 30, what="the hook deliveries to give up")
    key_grant = next(g["id"] for g in await console.api_entitlements(payment_id) if g["kind"] == "license_key")

    await page.goto(console.url("/console/hooks"))
    await page.get_by_role("link", name="failed (").click()
    row = page.get_by_role("row").filter(has_text=key_grant)
    await expect(row).to_contain_text("failed")

    endpoint.status = 204  # the merchant mends their endpoint
    await row.get_by_role("button", name="Retry").click()

    async def delivered() -> bool:
        return "delivered" in await console.delivery_statuses({key_grant})

    await wait_until(delivered, 30, what="the retried delivery")
    assert any(key_grant in call.body.decode() for call in endpoint.delivered())
    await page.goto(console.url("/console/hooks?status=delivered"))
    await expect(page.get_by_role("row").filter(has_text=key_grant)).to_contain_text("delivered")
