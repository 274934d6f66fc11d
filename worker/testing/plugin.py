"""The pytest plugin of the test kit (entry point `pytest11: dodo_worker`): the fixtures `dodo`
and `dodo_settings` (docs/testing.md).

Loaded by every pytest run where dodo-worker is installed, so it imports nothing heavy until a
test asks for `dodo`, and defines nothing else a project could trip over."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - the kit documents pytest-asyncio as a requirement
    pytest_asyncio = None  # type: ignore[assignment]

MISSING_ASYNCIO = ("the dodo fixture needs pytest-asyncio: pip install \"dodo-worker[testing]\" "
                   "(and mark tests @pytest.mark.asyncio, or set asyncio_mode = \"auto\")")


@pytest.fixture
def dodo_settings() -> dict[str, Any]:
    """Override in your conftest.py or test module: environment names (as in `.env`) and values,
    e.g. {"HANDLER_MODULES": "shop.handlers", "ENTITLEMENTS_FILE": "entitlements.toml"}."""
    return {}


def pytest_assertrepr_compare(op: str, left: object, right: object) -> list[str] | None:
    """`assert event.status == "processed"` failing shows the event, its handler runs and errors."""
    for side in (left, right):
        event = getattr(side, "dodo_event", None) if isinstance(side, str) else None
        if event is not None:
            return [f"{str(left)!r} {op} {str(right)!r}", *repr(event).splitlines()]
    return None


@pytest.fixture(scope="session")
def _dodo_redis() -> Iterator[Callable[[], Any]]:
    """An embedded Redis for the session, started the first time a test needs it."""
    started: list[Any] = []

    def get() -> Any:
        if not started:
            from worker.embedded_redis import EmbeddedRedis

            started.append(EmbeddedRedis().start())
        return started[0]

    yield get
    for server in started:
        server.close()


if pytest_asyncio is not None:
    @pytest_asyncio.fixture
    async def dodo(dodo_settings: dict[str, Any], tmp_path: Path, _dodo_redis: Callable[[], Any]
                   ) -> AsyncIterator[Any]:
        """The real receiver (over HTTP) and worker on a fresh database and Redis queue."""
        from worker.testing.kit import start

        async with start(dodo_settings, tmp_path, _dodo_redis) as kit:
            yield kit
else:  # pragma: no cover
    @pytest.fixture
    def dodo() -> Any:
        pytest.fail(MISSING_ASYNCIO, pytrace=False)
