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
HERE = Path(__file__).resolve().parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "faults: the fault suite (real processes, minutes); `make faults` runs it")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything here is marked `faults`. The suite takes minutes, so `make test` leaves it out
    unless asked for: `-m faults` (what `make faults` runs) or a path inside tests/faults."""
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.faults)
    asked = "faults" in (config.option.markexpr or "") or any(
        HERE == Path(arg.split("::")[0]).resolve() or HERE in Path(arg.split("::")[0]).resolve().parents
        for arg in config.args)
    if asked:
        return
    kept = [item for item in items if HERE not in item.path.parents]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[item for item in items if HERE in item.path.parents])
        items[:] = kept


@pytest.fixture
async def build_stack(redis_url: str, tmp_path: Path) -> AsyncIterator[MakeStack]:
    """Build FaultStacks on DATABASE_URL (required) and the shared Redis unless REDIS_URL is
    given; every process they started is stopped afterwards."""
    stacks: list[FaultStack] = []

    async def make(**settings: Any) -> FaultStack:
        db_url = settings.pop("DATABASE_URL")
        r_url = settings.pop("REDIS_URL", redis_url)
        stack = FaultStack(tmp_path, db_url, r_url, **settings)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        await stack.close()
        if stack.env["REDIS_URL"] == redis_url:
            await delete_keys(redis_url, [f"{stack.env['QUEUE_NAME']}*", f"arq:*:{stack.env['QUEUE_NAME']}:*"])


@pytest.fixture
async def make_stack(build_stack: MakeStack, database_url: str) -> MakeStack:
    """Like build_stack, on this test's fresh database (SQLite or PostgreSQL), grants table made;
    `entitlements=True` adds the built-in entitlement handlers and a catalog."""

    async def make(entitlements: bool = False, **settings: Any) -> FaultStack:
        stack = await build_stack(**{"DATABASE_URL": database_url, **settings})
        await stack.create_grants_table()
        if entitlements:
            stack.use_entitlements()
        return stack

    return make


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
