"""The reconciliation page in Chromium: "Dry run" reports a payment Dodo has and the webhooks
missed without changing anything; "Run now" repairs it, so its customer gets their grants.

Each button posts a form answered by a redirect to the page (`?outcome=...`), which, while its
scan runs, refreshes its results itself (htmx, every 2 s) until the scan ends. So the test waits
for that redirect, then for the result to appear: no reload of its own, which would race the
form's navigation ("Not attached to an active page")."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.browser.stack import PRODUCT, ConsoleStack
from tests.support import wait_until
from worker.testing.fakedodo import FakeDodo

SCAN_MS = 30_000


async def press(page: Any, button: str, outcome: str) -> None:
    """Press `button` and wait for the page its form redirects to."""
    await page.get_by_role("button", name=button).click()
    await page.wait_for_url(f"**/console/reconcile?outcome={outcome}")
    await expect(page.locator("p.notice")).to_be_visible()


async def test_dry_run_reports_a_missed_payment_and_run_now_repairs_it(page: Any, console: ConsoleStack,
                                                                     fake_dodo: tuple[FakeDodo, str]) -> None:
    fake, _ = fake_dodo
    missed = fake.add_payment(product_cart=[{"product_id": PRODUCT, "quantity": 1}],
                              customer={"email": "hana@example.com"})
    payment_id = missed["payment_id"]

    await page.goto(console.url("/console/reconciliation"))
    await press(page, "Dry run", "dry-run")
    dry_run = page.locator("article.dry-run").first
    await expect(dry_run).to_contain_text(payment_id, timeout=SCAN_MS)
    await expect(dry_run).to_contain_text("would repair 1")
    assert await console.api_entitlements(payment_id) == []  # a dry run changes nothing

    await press(page, "Run now", "started")
    await expect(page.locator("table.runs")).to_contain_text(payment_id, timeout=SCAN_MS)

    async def granted() -> list[dict[str, Any]]:
        return await console.api_entitlements(payment_id)

    grants = await wait_until(granted, 30, what=f"the grants of the repaired {payment_id}")
    assert {g["kind"] for g in grants} == {"license_key", "file"}
    assert all(g["email"] == "hana@example.com" for g in grants)
