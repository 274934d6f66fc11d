"""Signing in to the console: wrong and right passwords, the limit on failures, the session
cookie's attributes, expiry, sign-out and a password change ending sessions."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from sqlalchemy import select

from tests.console.conftest import PASSWORD, ConsoleClient
from tests.support import wait_until
from worker.console.csrf import SIGNIN_COOKIE
from worker.console.models import ConsoleAuditRow


async def test_a_wrong_password_does_not_get_in_and_the_right_one_does(browser: ConsoleClient) -> None:
    wrong = await browser.sign_in(password="not it")
    assert wrong.status_code == 401 and "Wrong password" in wrong.text
    assert "dodo_console=" not in wrong.headers.get("set-cookie", "")
    assert (await browser.get("/console")).status_code == 303

    right = await browser.sign_in(next_path="/console/events?status=dead")
    assert right.status_code == 303 and right.headers["location"] == "/console/events?status=dead"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/console" in cookie
    assert "max-age=28800" in cookie and "secure" not in cookie  # plain http here
    assert (await browser.get("/console")).status_code == 200

    async with browser.stack.db.sessions() as session:
        trail = [(r.operator, r.client, r.action) for r in await session.scalars(select(ConsoleAuditRow))]
    assert trail == [("Ann Operator", "127.0.0.1", "signin.failed"), ("Ann Operator", "127.0.0.1", "signin")]


async def test_sign_in_needs_a_name_and_its_csrf_token_and_never_redirects_elsewhere(browser: ConsoleClient) -> None:
    no_name = await browser.sign_in(name="   ")
    assert no_name.status_code == 400 and "Give your name" in no_name.text
    no_token = await browser.http.post("/console/signin", data={"operator": "Ann", "password": PASSWORD})
    assert no_token.status_code == 403 and "dodo_console=" not in no_token.headers.get("set-cookie", "")
    elsewhere = await browser.sign_in(next_path="//evil.example/console")
    assert elsewhere.headers["location"] == "/console"


async def test_failed_sign_ins_are_limited_per_address(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD, CONSOLE_SIGNIN_FAIL_DELAY_SECONDS=0,
                                CONSOLE_SIGNIN_MAX_FAILURES=3)
    browser = ConsoleClient(stack)
    try:
        for _ in range(3):
            assert (await browser.sign_in(password="guess")).status_code == 401
        limited = await browser.sign_in()  # even the right password, once limited
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 900
        assert "dodo_console=" not in limited.headers.get("set-cookie", "")
    finally:
        await browser.aclose()


async def test_failed_sign_ins_are_slowed(stack_factory: Any) -> None:
    import time

    stack = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD, CONSOLE_SIGNIN_FAIL_DELAY_SECONDS=0.3)
    browser = ConsoleClient(stack)
    try:
        started = time.monotonic()
        assert (await browser.sign_in(password="guess")).status_code == 401
        assert time.monotonic() - started >= 0.3
    finally:
        await browser.aclose()


async def test_a_session_expires(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD, CONSOLE_SESSION_SECONDS=1)
    browser = ConsoleClient(stack)
    try:
        assert (await browser.sign_in()).status_code == 303
        assert (await browser.get("/console")).status_code == 200

        async def signed_out() -> bool:
            return (await browser.get("/console")).status_code == 303

        await wait_until(signed_out, timeout=10, what="the session to expire")
    finally:
        await browser.aclose()


async def test_sign_out_ends_the_session_for_good(signed_in: ConsoleClient) -> None:
    cookie = signed_in.http.cookies["dodo_console"]
    answer = await signed_in.submit("/console/signout")
    assert answer.status_code == 303 and answer.headers["location"] == "/console/signin"
    replayed = await signed_in.get("/console", cookies={"dodo_console": cookie})
    assert replayed.status_code == 303  # the old cookie is worthless, not just forgotten by the browser


async def test_changing_the_password_ends_every_session(stack_factory: Any) -> None:
    old = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD)
    new = await stack_factory(worker=False, CONSOLE_PASSWORD="a brand new password")  # same database
    browser = ConsoleClient(old)
    try:
        assert (await browser.sign_in()).status_code == 303
        cookie = browser.http.cookies["dodo_console"]
        assert (await new.http.get(new.base_url + "/console", cookies={"dodo_console": cookie})).status_code == 303
    finally:
        await browser.aclose()


async def test_the_cookie_is_secure_behind_a_trusted_https_proxy_only(stack_factory: Any) -> None:
    # X-Forwarded-Proto (and -For) are believed from TRUSTED_PROXIES only, as for the licence routes;
    # the test's client, at 127.0.0.1, plays the proxy.
    trusted = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD, TRUSTED_PROXIES="127.0.0.1")
    untrusted = await stack_factory(worker=False, CONSOLE_PASSWORD=PASSWORD, TRUSTED_PROXIES="10.9.9.9")
    for stack, secure, client, name in ((trusted, True, "203.0.113.7", "Ann"), (untrusted, False, "127.0.0.1", "Bob")):
        browser = ConsoleClient(stack)
        browser.http.headers.update({"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7"})
        try:
            token = await browser.csrf("/console/signin")
            # Sent by hand: httpx (rightly) keeps a Secure cookie off this plain-http connection.
            answer = await browser.http.post("/console/signin", cookies={SIGNIN_COOKIE: token}, data={
                "csrf_token": token, "operator": name, "password": PASSWORD})
            assert answer.status_code == 303
            assert ("secure" in answer.headers["set-cookie"].lower()) is secure
        finally:
            await browser.aclose()
        async with stack.db.sessions() as session:
            [signin] = await session.scalars(select(ConsoleAuditRow.client).where(ConsoleAuditRow.operator == name))
        assert signin == client  # the address the audit trail records


def _next_field(page: str) -> str:
    found = re.search(r'name="next" value="([^"]*)"', page)
    assert found is not None, "no next field on the sign-in page"
    return html.unescape(found.group(1))


async def test_a_wrong_password_keeps_where_the_operator_was_going(browser: ConsoleClient) -> None:
    """As a browser does: follow the redirect to the sign-in page, post its form (with its hidden
    `next`) with a wrong password, then post the form that answer shows with the right one."""
    asked = "/console/events/evt_42?tab=history&x=%22"
    redirect = await browser.get(asked)
    assert redirect.status_code == 303
    form = await browser.get(redirect.headers["location"])
    assert _next_field(form.text) == asked

    for attempt in ("not it", "still not it"):
        token = await browser.csrf("/console/signin")
        wrong = await browser.http.post("/console/signin", data={
            "csrf_token": token, "operator": "Ann", "password": attempt, "next": _next_field(form.text)})
        assert wrong.status_code == 401
        form = wrong
    assert _next_field(form.text) == asked

    right = await browser.http.post("/console/signin", data={
        "csrf_token": await browser.csrf("/console/signin"), "operator": "Ann", "password": PASSWORD,
        "next": _next_field(form.text)})
    assert right.status_code == 303 and right.headers["location"] == asked


@pytest.mark.parametrize("elsewhere", ["//evil.example/console", "https://evil.example/console",
                                       "/console\\\\evil.example", "/consoleevil", "/console/\r\nSet-Cookie: x=1",
                                       "javascript:alert(1)", "/\t/evil.example"])
async def test_next_is_only_ever_a_console_path_even_after_a_wrong_password(browser: ConsoleClient,
                                                                         elsewhere: str) -> None:
    token = await browser.csrf("/console/signin")
    wrong = await browser.http.post("/console/signin", data={
        "csrf_token": token, "operator": "Ann", "password": "no", "next": elsewhere})
    assert wrong.status_code == 401 and _next_field(wrong.text) == "/console"
    right = await browser.sign_in(next_path=elsewhere)
    assert right.headers["location"] == "/console"
