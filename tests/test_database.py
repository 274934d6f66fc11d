"""The connection pool on PostgreSQL: each checkout pings the connection in one round trip and
replaces it when its server side is gone, so a restart of the server costs no request."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import event, text

from worker.store.database import create_engine


async def _terminate(url: str, pid: int) -> None:
    """End a server process and wait (up to 5 s) until it is gone."""
    admin = create_engine(url)
    try:
        async with admin.connect() as connection:
            assert await connection.scalar(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
    finally:
        await admin.dispose()


@pytest.fixture
def postgres_url(backend: str, database_url: str) -> str:
    if backend != "postgresql":
        pytest.skip("pinging is for server databases")
    return database_url


async def test_a_connection_whose_server_side_died_is_replaced_at_checkout(postgres_url: str) -> None:
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            first = await connection.scalar(text("SELECT pg_backend_pid()"))
        await _terminate(postgres_url, first)  # the pooled connection is now dead
        async with engine.connect() as connection:  # pinged, found dead, replaced: no error
            second = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert second != first
    finally:
        await engine.dispose()


async def test_the_ping_is_one_statement_and_sqlalchemys_three_are_not_sent(postgres_url: str) -> None:
    engine = create_engine(postgres_url, pool_size=1, max_overflow=0)
    sent: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    pings: list[int] = []
    original = engine.dialect.do_ping
    engine.dialect.do_ping = lambda dbapi_connection: pings.append(1) or original(dbapi_connection)  # type: ignore[method-assign]
    try:
        for _ in range(3):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()
    assert sent == ["SELECT 1"] * 3 and pings == []  # our ping bypasses both; SQLAlchemy's was not used
