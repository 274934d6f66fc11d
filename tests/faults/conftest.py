"""Fixtures of the fault suite: a factory of real-process stacks and private servers to break."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.faults.procs import FaultStack
from tests.faults.servers import PrivatePostgres
from tests.support import delete_keys
from worker.embedded_redis import EmbeddedRedis

MakeStack = Callable[..., Awaitable[FaultStack]]


@pytest.fixture
async def make_stack(database_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[MakeStack]:
    """Build a FaultStack on this test's database (grants table created) and the shared Redis,
    unless DATABASE_URL or REDIS_URL are given; every process it started is stopped afterwards."""
    stacks: list[FaultStack] = []

    async def make(**settings: Any) -> FaultStack:
        db_url = settings.pop("DATABASE_URL", database_url)
        r_url = settings.pop("REDIS_URL", redis_url)
        stack = FaultStack(tmp_path, db_url, r_url, **settings)
        stacks.append(stack)
        await stack.create_grants_table()
        return stack

    yield make
    for stack in stacks:
        await stack.close()
        if stack.env["REDIS_URL"] == redis_url:
            await delete_keys(redis_url, [f"{stack.env['QUEUE_NAME']}*"])


@pytest.fixture
def private_redis() -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own (never the shared one), which the test may stop and start."""
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test's own, which the test may stop and start."""
    reason = PrivatePostgres.unavailable()
    if reason:
        pytest.skip(reason)
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.close()
