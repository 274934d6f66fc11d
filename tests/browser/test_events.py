"""The outside check of the console, in Chromium: no session shows no event, a wrong password does
not get in and the right one does, to the page asked for; the events page lists a processed and a dead event; the dead
one's page shows "dead" and its error, refuses its Replay form without the CSRF token, and
"Replay" after the fix processes it; "Replay all dead" replays every dead event."""

from __future__ import annotations

from typing import Any

from playwright.async_api import expect

from tests.browser.conftest import Shoot, sign_in
from tests.browser.stack import ConsoleStack


async def test_without_a_session_no_event_shows_and_only_the_right_password_gets_in(
        anonymous_page: Any, console: ConsoleStack) -> None:
    event_id, _, _ = await console.pay(email="quiet@example.com")
    await console.wait_status(event_id, "processed")
    page = anonymous_page

    await page.goto(console.url(f"/console/events/{event_id}"))  # e.g. a link in an alert
    assert "/console/signin" in page.url
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert event_id not in await page.locator("body").inner_text()  # only the form's `next` holds it

    await sign_in(page, console, password="not the password")
    await expect(page.get_by_role("alert")).to_be_visible()
    assert "/console/signin" in page.url
    assert event_id not in await page.locator("body").inner_text()

    # The right password, after a wrong one, still lands on the page that was asked for.
    await sign_in(page, console)
    await page.wait_for_url(f"**/console/events/{event_id}")
    await expect(page.get_by_role("heading", name=event_id)).to_be_visible()
    await page.get_by_role("link", name="← Events").click()
    await expect(page.get_by_role("link", name=event_id)).to_be_visible()


async def test_a_dead_event_shows_its_error_refuses_a_forged_replay_and_replays_after_the_fix(
        page: Any, console: ConsoleStack, screenshot: Shoot) -> None:
    ok, _, _ = await console.pay(email="ada@example.com")
    dead, dead_payment, _ = await console.pay(email="bob@example.com", broken=True)
    await console.wait_status(ok, "processed")
    await console.wait_status(dead, "dead")

    await page.goto(console.url("/console/events"))
    await expect(page.get_by_role("row").filter(has_text=ok)).to_contain_text("processed")
    await expect(page.get_by_role("row").filter(has_text=dead)).to_contain_text("dead")

    # Filter by status, then search by the customer's email.
    await page.get_by_label("Status").select_option("dead")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name=dead)).to_be_visible()
    await expect(page.get_by_role("link", name=ok)).to_have_count(0)
    await page.get_by_label("Status").select_option("")
    await page.get_by_label("Search").fill("ada@example.com")
    await page.get_by_role("button", name="Filter").click()
    await expect(page.get_by_role("link", name=ok)).to_be_visible()
    await expect(page.get_by_role("link", name=dead)).to_have_count(0)

    await page.goto(console.url("/console/events"))
    await page.get_by_role("link", name=dead).click()
    await page.wait_for_url(f"**/console/events/{dead}")
    await expect(page.locator(".facts")).to_contain_text("dead")
    await expect(page.locator("pre.error", has_text=f"the mail server said no to {dead_payment}").first).to_be_visible()
    await screenshot(page, "event")

    # The Replay form's action, POSTed from the signed-in page without the CSRF token: refused.
    form = page.locator("form").filter(has=page.get_by_role("button", name="Replay"))
    action = await form.get_attribute("action")
    forged = await page.request.post(console.url(action), form={}, max_redirects=0)
    assert forged.status == 403
    assert await console.status(dead) == "dead"

    console.fix(dead_payment)
    await page.get_by_role("button", name="Replay").click()
    await console.wait_status(dead, "processed")
    await page.reload()
    await expect(page.locator(".facts")).to_contain_text("processed")
    await expect(page.get_by_role("button", name="Replay")).to_have_count(0)


async def test_replay_all_dead_processes_every_dead_event_after_the_fix(page: Any, console: ConsoleStack) -> None:
    sent = [await console.pay(email=f"carol{n}@example.com", broken=True) for n in range(2)]
    for event_id, _, _ in sent:
        await console.wait_status(event_id, "dead")
    for _, payment_id, _ in sent:
        console.fix(payment_id)

    await page.goto(console.url("/console/events"))
    await page.get_by_role("button", name="Replay all dead").click()
    for event_id, _, _ in sent:
        await console.wait_status(event_id, "processed")
    await page.goto(console.url("/console/events?status=dead"))
    for event_id, _, _ in sent:
        await expect(page.get_by_role("link", name=event_id)).to_have_count(0)
