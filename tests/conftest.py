"""Fixtures: real Redis (REDIS_URL or an embedded server), a fresh database per test on SQLite
and, when TEST_DATABASE_URL is set, PostgreSQL too; and the running stack over HTTP.

The suite runs on the test kit (worker/testing, docs/testing.md): `stack`/`stack_factory` are
built from its parts (tests/support.py) and `dodo` is the kit's own fixture, run here on each
backend. Every test that uses one of them is marked `kit` (`pytest --collect-only -m kit`)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import SQLAlchemyError

from tests.support import Stack, fresh_database, make_settings
from worker.embedded_redis import EmbeddedRedis
from worker.registry import Registry
from worker.testing.kit import all_event_ids, delete_keys, start

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])
KIT_FIXTURES = {"dodo", "stack", "stack_factory"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kit: the test runs on the test kit (the dodo fixture or Stack over it)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if KIT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kit)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database_url(backend: str, tmp_path: Any) -> AsyncIterator[str]:
    async with fresh_database(backend, str(tmp_path)) as url:
        yield url


@pytest.fixture
def registry() -> Registry:
    return Registry()


@pytest.fixture
async def stack_factory(database_url: str, redis_url: str, registry: Registry) -> AsyncIterator[Any]:
    """Build stacks with settings overrides; each is started (web and worker) unless told not to."""
    stacks: list[Stack] = []

    async def make(web: bool = True, worker: bool = True, **overrides: Any) -> Stack:
        settings = make_settings(database_url, overrides.pop("REDIS_URL", redis_url), **overrides)
        stack = Stack(settings=settings, registry=registry, secret=settings.webhook_secrets[0])
        stacks.append(stack)
        if web:
            await stack.start_web()
        if worker:
            await stack.start_worker()
        return stack

    yield make
    for stack in stacks:
        await stack.stop_worker()
        await stack.stop_web()
        if stack.settings.REDIS_URL == redis_url:  # the test's keys, and its events' arq jobs
            await delete_keys(redis_url, stack.settings.QUEUE_NAME, await _event_ids(stack, database_url))
        await stack.close()


async def _event_ids(stack: Stack, database_url: str) -> list[str]:
    """The stack's events, whose arq jobs to delete: none where the test took its database away
    (another URL, or the tables dropped)."""
    if stack.settings.DATABASE_URL != database_url:
        return []
    try:
        return await all_event_ids(stack.db)
    except SQLAlchemyError:
        return []


@pytest.fixture
async def stack(stack_factory: Any) -> Stack:
    return await stack_factory()  # type: ignore[no-any-return]


@pytest.fixture
async def dodo(dodo_settings: dict[str, Any], backend: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    """The kit's `dodo` (worker/testing/plugin.py) on this test's backend and the suite's Redis."""

    def no_embedded_redis() -> Any:
        raise AssertionError("the suite gives the kit its REDIS_URL")

    async with start({"REDIS_URL": redis_url, **dodo_settings}, tmp_path, no_embedded_redis, backend) as kit:
        yield kit
