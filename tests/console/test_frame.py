"""The console's frame: mounted at /console, off without CONSOLE_PASSWORD, nothing but the
sign-in page without a session, the base layout with its nav, static files served by the app."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import ConsoleClient
from tests.test_migrations import _differences
from worker.store.database import create_engine


async def test_without_password_every_console_url_says_how_to_enable_it(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False)
    for path in ("/console", "/console/signin", "/console/events", "/console/grants"):
        page = await stack.http.get(stack.base_url + path)
        assert page.status_code == 404, path
        assert "CONSOLE_PASSWORD" in page.text and "Sign in" not in page.text
    posted = await stack.http.post(stack.base_url + "/console/signin", data={"password": "x", "operator": "a"})
    assert posted.status_code == 404 and "CONSOLE_PASSWORD" in posted.text


async def test_without_a_session_every_page_redirects_to_sign_in(browser: ConsoleClient) -> None:
    for path in ("/console", "/console/events?status=dead", "/console/grants", "/console/no-such-page"):
        answer = await browser.get(path)
        assert answer.status_code == 303, path
        assert answer.headers["location"].startswith("/console/signin?next=%2Fconsole")
    page = await browser.get("/console/signin")
    assert page.status_code == 200
    assert 'type="password"' in page.text and 'name="operator"' in page.text and "Sign in</button>" in page.text


async def test_signed_in_pages_have_the_nav_and_static_files_are_served(signed_in: ConsoleClient) -> None:
    page = await signed_in.get("/console")
    assert page.status_code == 200
    for label in ("Overview", "Events", "Grants", "Hooks", "Reconciliation"):
        assert f">{label}</a>" in page.text
    assert 'name="viewport"' in page.text and "Ann Operator" in page.text
    assert "/console/static/htmx.min.js" in page.text and "cdn" not in page.text.lower()
    script = await signed_in.get("/console/static/htmx.min.js")
    css = await signed_in.get("/console/static/console.css")
    assert script.status_code == 200 and "htmx" in script.text
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    missing = await signed_in.get("/console/no-such-page")
    assert missing.status_code == 404 and "No console page" in missing.text


async def test_migrations_build_the_console_tables(database_url: str) -> None:
    import worker.console.models
    import worker.entitlements.models
    import worker.reconcile.models  # noqa: F401

    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()


async def test_the_overview_counts_events_by_status_and_draws_the_hours(stack_factory: Any, registry: Any) -> None:
    from tests.console.conftest import PASSWORD
    from worker import Context, Event
    from worker.store import EventStatus

    @registry.on("refund.succeeded")
    async def broken(event: Event, ctx: Context) -> None:
        raise RuntimeError("broken")

    stack = await stack_factory(MAX_ATTEMPTS=1, CONSOLE_PASSWORD=PASSWORD)
    dead, _ = await stack.send("refund.succeeded")
    await stack.wait_status(dead, EventStatus.DEAD)
    browser = ConsoleClient(stack)
    try:
        await browser.sign_in()
        page = await browser.get("/console")
        assert page.status_code == 200
        assert '<a href="/console/events?status=dead">1</a>' in page.text
        assert "<svg" in page.text and "Webhooks received and rejected per hour" in page.text
        assert ": 1 received</title></rect>" in page.text  # this hour's bar holds the event
        assert "No reconciliation run yet." in page.text and "No hook delivery is failing." in page.text
    finally:
        await browser.aclose()


def test_the_app_declares_every_parameter_as_litestar_wants_it(tmp_path: Any) -> None:
    """No handler of ours leaves Litestar to infer a dependency or a path or query parameter
    (deprecated since 2.23, gone in 3.0): a merchant's test run shows none of these warnings."""
    import warnings

    from litestar.exceptions import LitestarDeprecationWarning

    from tests.support import make_settings
    from worker.web.app import create_app

    settings = make_settings(f"sqlite+aiosqlite:///{tmp_path}/app.db", "redis://127.0.0.1:6379/0",
                             CONSOLE_PASSWORD="a password")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        create_app(settings)
    assert [str(w.message) for w in caught if issubclass(w.category, LitestarDeprecationWarning)] == []
