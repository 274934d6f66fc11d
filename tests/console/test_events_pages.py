"""The events pages, from outside: a processed and a dead event listed, the dead one's page
with "dead", its error and a Replay button; Replay without the CSRF token refused and nothing
changed; Replay after the fix processes it; search and filters; "Replay all dead"."""

from __future__ import annotations

import html
import re
from typing import Any

from tests.console.conftest import PASSWORD, ConsoleClient
from worker import Context, Event
from worker.registry import Registry
from worker.store import EventStatus

ERROR = "licence server unreachable: connection refused"


async def _one_processed_one_dead(stack_factory: Any, registry: Registry, fixed: dict[str, bool]) -> Any:
    @registry.on("refund.succeeded")
    async def provision(event: Event, ctx: Context) -> None:
        if not fixed["now"]:
            raise ConnectionError(ERROR)

    @registry.on("payment.succeeded")
    async def fine(event: Event, ctx: Context) -> None:
        return None

    stack = await stack_factory(MAX_ATTEMPTS=1, CONSOLE_PASSWORD=PASSWORD, CONSOLE_SIGNIN_FAIL_DELAY_SECONDS=0)
    processed, _ = await stack.send("payment.succeeded", {"payment_id": "pay_console1",
                                                         "customer": {"email": "ann@example.com"}})
    dead, _ = await stack.send("refund.succeeded", {"refund_id": "ref_console1", "payment_id": "pay_console1"})
    await stack.wait_status(processed, EventStatus.PROCESSED)
    await stack.wait_status(dead, EventStatus.DEAD)
    return stack, processed, dead


async def test_the_dead_event_page_shows_dead_and_its_error_and_replay_after_the_fix_processes_it(
        stack_factory: Any, registry: Registry) -> None:
    fixed = {"now": False}
    stack, processed, dead = await _one_processed_one_dead(stack_factory, registry, fixed)
    browser = ConsoleClient(stack)
    try:
        hidden = await browser.get("/console/events")
        assert hidden.status_code == 303 and processed not in hidden.text and dead not in hidden.text
        assert (await browser.sign_in()).status_code == 303

        listing = await browser.get("/console/events")
        assert f'href="/console/events/{processed}"' in listing.text
        assert f'href="/console/events/{dead}"' in listing.text
        assert "Replay all dead" in listing.text

        page = await browser.get(f"/console/events/{dead}")
        assert page.status_code == 200
        assert ">dead<" in page.text and ERROR in page.text and "Replay</button>" in page.text
        # The handler's own message is under "Error", above the attempts and their tracebacks.
        assert page.text.index(ERROR) < page.text.index("<h2>Handlers</h2>")
        assert '"refund_id": "ref_console1"' in html.unescape(page.text)  # the envelope, pretty-printed
        assert "webhook-signature" not in page.text.lower()
        processed_page = await browser.get(f"/console/events/{processed}")
        assert "Replay</button>" not in processed_page.text

        refused = await browser.http.post(f"/console/events/{dead}/replay", data={})
        forged = await browser.http.post(f"/console/events/{dead}/replay", data={"csrf_token": "x" * 64})
        assert refused.status_code == forged.status_code == 403
        assert (await stack.event(dead)).status == EventStatus.DEAD  # type: ignore[union-attr]

        fixed["now"] = True
        replayed = await browser.submit(f"/console/events/{dead}/replay", token_from=f"/console/events/{dead}")
        assert replayed.status_code == 303
        assert replayed.headers["location"] == f"/console/events/{dead}?notice=replayed"
        await stack.wait_status(dead, EventStatus.PROCESSED)
        after = await browser.get(f"/console/events/{dead}")
        assert ">processed<" in after.text and "Replay</button>" not in after.text
        assert "Ann Operator (127.0.0.1): event.replay" in after.text  # the audit trail, with who and where
    finally:
        await browser.aclose()


async def test_search_filters_and_pages(stack_factory: Any, registry: Registry) -> None:
    stack, processed, dead = await _one_processed_one_dead(stack_factory, registry, {"now": False})
    browser = ConsoleClient(stack)
    try:
        await browser.sign_in()

        async def ids(query: str) -> set[str]:
            page = await browser.get("/console/events" + query)
            assert page.status_code == 200, query
            return set(re.findall(r'href="/console/events/([^"?/]+)"', page.text))

        assert await ids("?status=dead") == {dead}
        assert await ids("?type=payment.succeeded") == {processed}
        assert await ids("?q=ann%40example.com") == {processed}  # an email in the envelope
        assert await ids("?q=ref_console1") == {dead}  # the refund id
        assert await ids(f"?q={processed[:10]}") >= {processed}  # an event id prefix
        assert await ids("?q=nothing-like-this") == set()
        assert await ids("?page=2") == set()  # two events: one page
        partial = await browser.get("/console/events?status=dead", headers={"HX-Request": "true"})
        assert "<html" not in partial.text and dead in partial.text  # htmx gets the table only
        assert (await browser.get("/console/events?status=bogus&page=-3")).status_code == 200
        assert (await browser.get("/console/events/evt_nope")).status_code == 404
    finally:
        await browser.aclose()


async def test_replay_all_dead(stack_factory: Any, registry: Registry) -> None:
    fixed = {"now": False}
    stack, _processed, dead = await _one_processed_one_dead(stack_factory, registry, fixed)
    browser = ConsoleClient(stack)
    try:
        await browser.sign_in()
        assert (await browser.http.post("/console/events/replay-dead", data={})).status_code == 403
        fixed["now"] = True
        answer = await browser.submit("/console/events/replay-dead", token_from="/console/events")
        assert answer.status_code == 303 and answer.headers["location"] == "/console/events?notice=replayed-dead"
        await stack.wait_status(dead, EventStatus.PROCESSED)
    finally:
        await browser.aclose()
