"""Fixtures of the console tests: a stack with the console on, and a browser-like HTTP client
that signs in and posts forms with their CSRF token, as a person at a browser would."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support import Stack

PASSWORD = "correct horse battery staple"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class ConsoleClient:
    """One browser: its own cookie jar, no redirects followed unless asked."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.http = httpx.AsyncClient(base_url=stack.base_url, timeout=15)

    async def get(self, path: str, **options: Any) -> httpx.Response:
        return await self.http.get(path, **options)

    async def csrf(self, path: str = "/console") -> str:
        """The CSRF token of the forms on `path`."""
        page = await self.http.get(path)
        found = CSRF.search(page.text)
        assert found is not None, f"no CSRF token on {path} ({page.status_code})"
        return found.group(1)

    async def sign_in(self, password: str = PASSWORD, name: str = "Ann Operator",
                      next_path: str = "/console") -> httpx.Response:
        token = await self.csrf("/console/signin")
        return await self.http.post("/console/signin", data={
            "csrf_token": token, "operator": name, "password": password, "next": next_path})

    async def submit(self, path: str, data: dict[str, str] | None = None,
                     token_from: str = "/console") -> httpx.Response:
        """POST a console form with the token its page carries."""
        token = await self.csrf(token_from)
        return await self.http.post(path, data={"csrf_token": token, **(data or {})})

    async def aclose(self) -> None:
        await self.http.aclose()


@pytest.fixture
async def console_stack(stack_factory: Any) -> Stack:
    """Web and worker with the console on; failed sign-ins answered without the delay."""
    return await stack_factory(CONSOLE_PASSWORD=PASSWORD,  # type: ignore[no-any-return]
                               CONSOLE_SIGNIN_FAIL_DELAY_SECONDS=0)


@pytest.fixture
async def browser(console_stack: Stack) -> AsyncIterator[ConsoleClient]:
    client = ConsoleClient(console_stack)
    yield client
    await client.aclose()


@pytest.fixture
async def signed_in(browser: ConsoleClient) -> ConsoleClient:
    answer = await browser.sign_in()
    assert answer.status_code == 303, answer.text
    return browser
