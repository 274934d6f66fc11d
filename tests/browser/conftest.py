"""Browser tests of the operator console: Playwright drives Chromium against real `dodo-worker web`
and `dodo-worker worker` processes (one stack for all of them, tests/browser/stack.py).

Chromium is the system's (Debian's `chromium` package, or CHROMIUM_PATH): Playwright's own browser
download is never needed. Without Chromium or the `playwright` package every test here is skipped
and the run says so in one line. `CONSOLE_SCREENSHOTS=docs/console` (`make screenshots`) also
saves the screenshots docs/console.md shows.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.stack import OPERATOR, PASSWORD, ConsoleStack
from tests.entitlements.receiver import HookEndpoint, serve
from tests.support import delete_keys
from worker.testing.fakedodo import FakeDodo
from worker.testing.fakedodo import serve as serve_dodo
from worker.testing.kit import database

HERE = Path(__file__).resolve().parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]  # the background fetches would be refused on a closed network
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
TIMEOUT_MS = 10_000
Shoot = Callable[[Any, str], Awaitable[None]]


def chromium_path() -> str | None:
    return os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")


def why_skipped() -> str | None:
    """The one line a run prints when the browser tests cannot run here, else None."""
    if importlib.util.find_spec("playwright") is None:
        return "browser tests skipped: the playwright package is not installed; run make install"
    path = chromium_path()
    if path is None:
        return "browser tests skipped: Chromium not found; install Debian's chromium package or set CHROMIUM_PATH"
    if not os.access(path, os.X_OK):
        return f"browser tests skipped: CHROMIUM_PATH={path} is not an executable; point it at Chromium"
    return None


def _browser_items(items: list[pytest.Item]) -> list[pytest.Item]:
    return [item for item in items if HERE in item.path.parents]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = why_skipped()
    mine = _browser_items(items)
    if reason and mine:
        config.stash[SKIPPED] = reason
        for item in mine:
            item.add_marker(pytest.mark.skip(reason=reason))


SKIPPED = pytest.StashKey[str]()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    reason = config.stash.get(SKIPPED, None)
    if reason:
        terminalreporter.write_line(reason, yellow=True, bold=True)


_running: list[ConsoleStack] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Generator[None, Any, None]:
    """A failed browser test shows what the web and worker processes logged."""
    outcome = yield
    report = outcome.get_result()
    if report.failed and HERE in item.path.parents and _running:
        report.sections.append(("dodo-worker processes", _running[0].logs()))


# the stack ---------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
async def hook_endpoint() -> AsyncIterator[tuple[HookEndpoint, str]]:
    """The merchant's hook endpoint: answers 500 until a test sets `status` to 204."""
    endpoint = HookEndpoint(status=500)
    async with serve(endpoint) as url:
        yield endpoint, f"{url}/provision"


@pytest.fixture(scope="session")
async def fake_dodo() -> AsyncIterator[tuple[FakeDodo, str]]:
    fake = FakeDodo()
    async with serve_dodo(fake) as url:
        yield fake, url


@pytest.fixture(scope="session")
async def console(redis_url: str, tmp_path_factory: pytest.TempPathFactory, hook_endpoint: tuple[HookEndpoint, str],
                  fake_dodo: tuple[FakeDodo, str]) -> AsyncIterator[ConsoleStack]:
    """The running stack every browser test shares (each test makes events and grants of its own)."""
    tmp = tmp_path_factory.mktemp("console")
    fake, dodo_url = fake_dodo
    async with database(tmp) as url:
        stack = ConsoleStack(tmp, url, redis_url, hook_url=hook_endpoint[1], dodo_url=dodo_url,
                             dodo_api_key=fake.api_key)
        _running.append(stack)
        try:
            await stack.start()
            yield stack
        finally:
            _running.remove(stack)
            await stack.close()
            queue = stack.env["QUEUE_NAME"]
            await delete_keys(redis_url, [f"{queue}*", f"arq:*:{queue}:*"])


# the browser -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


async def sign_in(page: Any, console: ConsoleStack, password: str = PASSWORD, name: str = OPERATOR) -> None:
    """Fill the sign-in form as an operator does and press "Sign in" (on the sign-in page the
    console sent them to, if it did)."""
    if "/console/signin" not in page.url:
        await page.goto(console.url("/console/signin"))
    await page.get_by_label("Your name").fill(name)
    await page.get_by_label("Password").fill(password)
    await page.get_by_role("button", name="Sign in").click()


@pytest.fixture(scope="session")
async def signed_in_state(browser: Any, console: ConsoleStack) -> dict[str, Any]:
    """The cookies of one sign-in, so each test's page starts signed in without signing in again."""
    context = await browser.new_context(viewport=DESKTOP)
    page = await context.new_page()
    await sign_in(page, console)
    await page.wait_for_url(lambda url: "/signin" not in url)
    state: dict[str, Any] = await context.storage_state()
    await context.close()
    return state


async def _page(browser: Any, state: dict[str, Any] | None, viewport: dict[str, int]) -> Any:
    context = await browser.new_context(viewport=viewport, storage_state=state)
    context.set_default_timeout(TIMEOUT_MS)
    return await context.new_page()


@pytest.fixture
async def page(browser: Any, signed_in_state: dict[str, Any]) -> AsyncIterator[Any]:
    """A desktop-size page of an operator already signed in."""
    opened = await _page(browser, signed_in_state, DESKTOP)
    yield opened
    await opened.context.close()


@pytest.fixture
async def phone_page(browser: Any, signed_in_state: dict[str, Any]) -> AsyncIterator[Any]:
    """A phone-size page of an operator already signed in."""
    opened = await _page(browser, signed_in_state, PHONE)
    yield opened
    await opened.context.close()


@pytest.fixture
async def anonymous_page(browser: Any) -> AsyncIterator[Any]:
    """A page of someone with no session."""
    opened = await _page(browser, None, DESKTOP)
    yield opened
    await opened.context.close()


@pytest.fixture
def screenshot() -> Shoot:
    """`await screenshot(page, "overview")`: saved as CONSOLE_SCREENSHOTS/overview.png when that
    variable names a folder (`make screenshots`), else nothing."""
    folder = os.environ.get("CONSOLE_SCREENSHOTS")

    async def shoot(page: Any, name: str) -> None:
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)

    return shoot
