"""Fixtures: real Redis (REDIS_URL or an embedded server), a fresh database per test on SQLite
and, when TEST_DATABASE_URL is set, PostgreSQL too; and the running stack over HTTP."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.support import Stack, delete_keys, fresh_database, make_settings
from worker.embedded_redis import EmbeddedRedis
from worker.registry import Registry

BACKENDS = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])


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
        await stack.close()
        if stack.settings.REDIS_URL == redis_url:
            queue = stack.settings.QUEUE_NAME
            await delete_keys(redis_url, [f"{queue}*", f"arq:*:{queue}:*"])


@pytest.fixture
async def stack(stack_factory: Any) -> Stack:
    return await stack_factory()  # type: ignore[no-any-return]
