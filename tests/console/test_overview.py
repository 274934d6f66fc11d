"""The overview's figures as an operator reads them: webhooks rejected per hour beside those
received (the chart and its table), and the queue's depth and oldest waiting age counted from the
same jobs."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Any

from tests.console.conftest import PASSWORD, ConsoleClient
from tests.support import wait_until
from worker import queue
from worker.alerts import alerter
from worker.signing import generate_secret


def text_of(page: str, pattern: str) -> str:
    """The visible text of the first element of `page` matching `pattern`, tags removed."""
    found = re.search(pattern, page, re.S)
    assert found is not None, pattern
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", found.group(0))).split())


async def overview(stack: Any) -> str:
    browser = ConsoleClient(stack)
    try:
        assert (await browser.sign_in()).status_code == 303
        page = await browser.get("/console")
        assert page.status_code == 200
        return page.text
    finally:
        await browser.aclose()


async def test_webhooks_refused_over_http_are_in_this_hours_rejected_bar(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD)
    hour = datetime.now(UTC).strftime("%H:00")
    wrong = generate_secret()  # signed, but not with this endpoint's secret
    for _ in range(3):
        _, answer = await stack.send("payment.succeeded", secret=wrong)
        assert answer.status_code == 401
    _, accepted = await stack.send("payment.succeeded")
    assert accepted.status_code == 200
    await alerter(stack.app.state.runtime).drain()  # the receiver's count has reached Redis

    page = await overview(stack)
    assert f"<title>{hour}: 3 rejected</title></rect>" in page
    assert f"<title>{hour}: 1 received</title></rect>" in page
    assert "received" in text_of(page, r'<svg class="chart".*?</svg>') and "3 rejected" in page  # legend, desc
    card = r'<div class="card"><div class="muted">Webhooks stored, 24 h.*?</div></div>'
    assert "rejected, 24 h: 3" in text_of(page, card)
    assert f"{hour} 1 3" in text_of(page, r'<details class="chart-table">.*?</details>')  # hour, received, rejected


def queue_card(page: str) -> str:
    return text_of(page, r'<div class="card queue">.*?</div></div>')


async def test_queue_depth_and_oldest_waiting_count_the_same_jobs(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD)  # nothing takes jobs
    card = queue_card(await overview(stack))
    assert card == ("Queue depth (jobs waiting) 0 oldest waiting: none waiting "
                    "also 0 running, 0 scheduled (retries, cron)")

    # A retry due in an hour is in arq's queue (ZCARD) but waits for nothing yet.
    runtime = stack.app.state.runtime
    assert await queue.enqueue_retry(runtime.redis, runtime.settings.QUEUE_NAME, "evt_later", 3600)
    card = queue_card(await overview(stack))
    assert card.startswith("Queue depth (jobs waiting) 0 oldest waiting: none waiting") and "1 scheduled" in card

    _, answer = await stack.send("payment.succeeded")
    assert answer.status_code == 200

    async def queued() -> bool:  # the receiver queues new events a few ms after answering
        return bool(await runtime.redis.zcard(runtime.settings.QUEUE_NAME) == 2)

    await wait_until(queued, what="the webhook's job in the queue")
    card = queue_card(await overview(stack))
    assert re.fullmatch(r"Queue depth \(jobs waiting\) 1 oldest waiting: \d+ s also 0 running, 1 scheduled "
                        r"\(retries, cron\)", card), card
    state = await queue.queue_state(runtime.redis, runtime.settings.QUEUE_NAME)
    assert state.depth == await runtime.redis.zcard(runtime.settings.QUEUE_NAME) == 2  # dodo_queue_depth's count
