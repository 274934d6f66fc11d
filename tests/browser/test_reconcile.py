"""The reconciliation page in Chromium: "Dry run" reports a payment Dodo has and the webhooks
missed without changing anything; "Run now" repairs it, so its customer gets their grants."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.browser.stack import PRODUCT, ConsoleStack
from tests.support import wait_until
from worker.testing.fakedodo import FakeDodo


async def shown_after_reload(page: Any, selector: str, text: str) -> None:
    """The scan runs in the background: reload until its result is on the page."""
    async def shown() -> bool:
        await page.reload()
        return any(text in part for part in await page.locator(selector).all_inner_texts())

    await wait_until(shown, 30, what=f"{text!r} in {selector}")


async def test_dry_run_reports_a_missed_payment_and_run_now_repairs_it(page: Any, console: ConsoleStack,
                                                                     fake_dodo: tuple[FakeDodo, str]) -> None:
    fake, _ = fake_dodo
    missed = fake.add_payment(product_cart=[{"product_id": PRODUCT, "quantity": 1}],
                              customer={"email": "hana@example.com"})
    payment_id = missed["payment_id"]

    await page.goto(console.url("/console/reconciliation"))
    await page.get_by_role("button", name="Dry run").click()
    await shown_after_reload(page, "article.dry-run", payment_id)
    await expect(page.locator("article.dry-run").first).to_contain_text("would repair 1")
    assert await console.api_entitlements(payment_id) == []  # a dry run changes nothing

    await page.get_by_role("button", name="Run now").click()
    await shown_after_reload(page, "table.runs", payment_id)

    async def granted() -> list[dict[str, Any]]:
        return await console.api_entitlements(payment_id)

    grants = await wait_until(granted, 30, what=f"the grants of the repaired {payment_id}")
    assert {g["kind"] for g in grants} == {"license_key", "file"}
    assert all(g["email"] == "hana@example.com" for g in grants)
