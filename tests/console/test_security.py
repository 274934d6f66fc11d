"""Console responses carry the security headers, and no page ever shows a secret or a
signature header: walked over every page, signed in and not."""

from __future__ import annotations

from typing import Any

import httpx

from tests.console.conftest import PASSWORD, ConsoleClient
from worker import Context, Event
from worker.registry import Registry
from worker.signing import generate_secret
from worker.store import EventStatus


def _assert_headers(answer: httpx.Response, cached: bool = False) -> None:
    csp = answer.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert answer.headers["x-frame-options"] == "DENY"
    assert ("no-store" in answer.headers["cache-control"]) is not cached


async def test_every_kind_of_console_response_has_the_security_headers(signed_in: ConsoleClient) -> None:
    anonymous = ConsoleClient(signed_in.stack)
    try:
        for answer in (await anonymous.get("/console"), await anonymous.get("/console/signin"),
                       await anonymous.sign_in(password="wrong"), await signed_in.get("/console"),
                       await signed_in.get("/console/events"), await signed_in.get("/console/events/evt_missing"),
                       await signed_in.get("/console/nowhere"),
                       await signed_in.http.post("/console/signout", data={})):
            _assert_headers(answer)
        _assert_headers(await anonymous.get("/console/static/htmx.min.js"), cached=True)
        page = await signed_in.get("/console")
        assert "<script>" not in page.text and " on" + "click=" not in page.text  # no inline script
    finally:
        await anonymous.aclose()


async def test_no_page_shows_a_secret_or_a_signature_header(stack_factory: Any, registry: Registry) -> None:
    @registry.on("payment.succeeded")
    async def failing(event: Event, ctx: Context) -> None:
        raise RuntimeError("boom")

    hooks_key, download_key = generate_secret(), "dk_" + "7" * 40
    stack = await stack_factory(MAX_ATTEMPTS=1, CONSOLE_PASSWORD=PASSWORD, CONSOLE_SIGNIN_FAIL_DELAY_SECONDS=0,
                                HOOKS_SIGNING_KEY=hooks_key, DOWNLOAD_SIGNING_KEY=download_key)
    event_id, _ = await stack.send("payment.succeeded")
    await stack.wait_status(event_id, EventStatus.DEAD)
    settings = stack.settings
    assert settings.WORKER_API_TOKEN is not None
    secrets = [stack.secret, stack.secret.removeprefix("whsec_"), PASSWORD, hooks_key, download_key,
               settings.WORKER_API_TOKEN.get_secret_value()]
    browser = ConsoleClient(stack)
    try:
        pages = [await browser.get(p) for p in ("/console", "/console/signin", f"/console/events/{event_id}")]
        pages.append(await browser.sign_in(password="wrong"))
        assert all(event_id not in page.text for page in pages)  # nothing to see without a session
        await browser.sign_in()
        for path in ("/console", "/console/events", f"/console/events/{event_id}", "/console/grants",
                     "/console/hooks", "/console/reconciliation", "/console/signin"):
            page = await browser.get(path, follow_redirects=True)
            for secret in secrets:
                assert secret not in page.text, path
            lowered = page.text.lower()
            assert "webhook-signature" not in lowered and "webhook-id:" not in lowered, path
        assert event_id in (await browser.get(f"/console/events/{event_id}")).text
    finally:
        await browser.aclose()
