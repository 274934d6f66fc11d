"""The overview in Chromium, on a desktop and on a phone: the dead events count links to them,
queue depth, the 24-hour chart of webhooks received and rejected, reconciliation runs and failing
hook deliveries are shown."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import expect
from redis.asyncio import Redis
from sqlalchemy import func, select

from tests.browser.conftest import Shoot
from tests.browser.stack import ConsoleStack
from tests.support import wait_until
from worker.signing import generate_secret, new_message_id, signed_headers
from worker.store import EventRow
from worker.windows import rejected_per_hour


async def dead_count(console: ConsoleStack) -> int:
    async with console.db.sessions() as session:
        return int(await session.scalar(select(func.count()).where(EventRow.status == "dead")) or 0)


async def rejected_this_hour(console: ConsoleStack, at_least: int) -> bool:
    redis = Redis.from_url(console.env["REDIS_URL"])
    try:
        [count] = await rejected_per_hour(redis, console.env["QUEUE_NAME"]).last(1)
    finally:
        await redis.aclose()
    return count >= at_least


async def test_the_overview_counts_dead_events_and_links_to_them(page: Any, phone_page: Any, console: ConsoleStack,
                                                                 screenshot: Shoot) -> None:
    dead, _, _ = await console.pay(email="frank@example.com", broken=True)
    ok, _, _ = await console.pay(email="gina@example.com")
    await console.wait_status(dead, "dead")
    await console.wait_status(ok, "processed")
    for _ in range(2):  # signed with a secret that is not the endpoint's
        body = b'{"type": "payment.succeeded", "data": {}}'
        answer = await console.post(body, signed_headers(generate_secret(), body.decode(), new_message_id()))
        assert answer.status_code == 401
    await wait_until(lambda: rejected_this_hour(console, 2), what="the refusals counted in Redis")

    await page.goto(console.url("/console"))
    await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    dead_card = page.locator(".card").filter(has_text="Dead events")
    await expect(dead_card.get_by_role("link")).to_have_text(str(await dead_count(console)))
    queue_depth = page.locator(".card").filter(has_text="Queue depth").locator(".big")
    await expect(queue_depth).to_have_text(re.compile(r"^\d+$"))
    chart = page.get_by_role("img", name=re.compile("Webhooks received and rejected per hour"))
    await expect(chart).to_be_visible()
    await expect(chart.locator("text", has_text="rejected")).to_have_count(1)  # the legend
    rejected_card = page.locator(".card").filter(has_text="Webhooks stored, 24 h")
    await expect(rejected_card).to_contain_text(re.compile(r"rejected, 24 h: [1-9]\d*"))
    await expect(page.get_by_role("heading", name="Last reconciliation runs")).to_be_visible()
    await expect(page.get_by_role("heading", name="Failing hook deliveries")).to_be_visible()
    await screenshot(page, "overview")

    await dead_card.get_by_role("link").click()
    await page.wait_for_url("**/console/events?status=dead")
    await expect(page.get_by_role("link", name=dead)).to_be_visible()
    await expect(page.get_by_role("link", name=ok)).to_have_count(0)

    # On a phone the page fits the screen's width (wide tables scroll inside their own box).
    await phone_page.goto(console.url("/console"))
    await expect(phone_page.get_by_role("heading", name="Overview")).to_be_visible()
    assert await phone_page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    await screenshot(phone_page, "overview-phone")
