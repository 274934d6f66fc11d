"""The grants pages in Chromium: the search box finds a customer's grants by email; a grant's page
shows its licence activations (each with "Deactivate"), its downloads and audit trail; "Revoke"
with a reason revokes it and "Restore" gives it back, as the read API then says."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import Shoot
from tests.browser.stack import OPERATOR, ConsoleStack


async def test_search_by_email_then_deactivate_revoke_and_restore(page: Any, console: ConsoleStack,
                                                               screenshot: Shoot) -> None:
    email = "dora@example.com"
    event_id, payment_id, _ = await console.pay(email=email)
    await console.wait_status(event_id, "processed")
    grants = {g["kind"]: g for g in await console.api_entitlements(payment_id)}
    key, file = grants["license_key"], grants["file"]
    activated = await console.http.post(console.url("/v1/licenses/activate"),
                                        json={"license_key": key["license_key"]["key"], "name": "Dora's laptop"})
    assert activated.status_code == 201, activated.text
    downloaded = await console.http.get(file["file"]["download_url"])
    assert downloaded.status_code == 200

    await page.goto(console.url("/console/grants"))
    await page.locator('input[type="search"]').fill(email)
    await page.get_by_role("button", name="Search").click()
    await expect(page.get_by_role("link", name=key["id"])).to_be_visible()
    await expect(page.get_by_role("link", name=file["id"])).to_be_visible()

    await page.get_by_role("link", name=file["id"]).click()
    await expect(page.locator("dl.details dt:text-is('Downloads') + dd")).to_have_text("1")

    await page.goto(console.url(f"/console/grants/{key['id']}"))
    laptop = page.get_by_role("row").filter(has_text="Dora's laptop")
    await expect(laptop.get_by_role("button", name="Deactivate")).to_be_visible()
    await screenshot(page, "grant")
    await laptop.get_by_role("button", name="Deactivate").click()
    await expect(laptop.get_by_role("button", name="Deactivate")).to_have_count(0)
    after = next(g for g in await console.api_entitlements(payment_id) if g["kind"] == "license_key")
    assert after["license_key"]["activations"] == 0

    await page.get_by_label("Reason").first.fill("ticket 1234: chargeback")
    await page.get_by_role("button", name="Revoke").click()
    await expect(page.locator("p .status")).to_have_text("revoked")
    audit = page.locator("table.audit")
    await expect(audit).to_contain_text("ticket 1234: chargeback")
    await expect(audit).to_contain_text(OPERATOR)
    revoked = next(g for g in await console.api_entitlements(payment_id) if g["kind"] == "license_key")
    assert revoked["status"] == "revoked"

    await page.get_by_role("button", name="Restore").click()
    await expect(page.locator("p .status")).to_have_text("active")
    await expect(page.get_by_role("button", name="Revoke")).to_be_visible()
    restored = next(g for g in await console.api_entitlements(payment_id) if g["kind"] == "license_key")
    assert restored["status"] == "active"
