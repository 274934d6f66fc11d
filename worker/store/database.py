"""Engine and sessions for SQLite (default) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """One engine and one session factory per process."""

    def __init__(self, url: str, **engine_options: Any) -> None:
        self.url = url
        self.engine: AsyncEngine = create_engine(url, **engine_options)
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(
            self.engine, expire_on_commit=False
        )

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def dispose(self) -> None:
        await self.engine.dispose()


def create_engine(url: str, **options: Any) -> AsyncEngine:
    """SQLAlchemy's async engine with our defaults. Server databases: a pool of 10 (+10), a 5 s
    connect and checkout timeout, and a ping at each checkout so the pool recovers by itself
    after the server comes back (one round trip on asyncpg, see `_ping_in_one_round_trip`)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_async_engine(url, **options)
        _configure_sqlite(engine)
        return engine
    own_ping = parsed.get_driver_name() == "asyncpg" and "pool_pre_ping" not in options
    options.setdefault("pool_pre_ping", not own_ping)
    options.setdefault("pool_size", 10)
    options.setdefault("max_overflow", 10)
    options.setdefault("pool_timeout", 5)
    connect_args = options.setdefault("connect_args", {})
    if parsed.get_backend_name() == "postgresql":
        connect_args.setdefault("timeout", 5)
        connect_args.setdefault("command_timeout", 30)
    engine = create_async_engine(url, **options)
    if own_ping:
        _ping_in_one_round_trip(engine)
    return engine


def _ping_in_one_round_trip(engine: AsyncEngine) -> None:
    """`pool_pre_ping` in one round trip instead of three.

    SQLAlchemy pings an asyncpg connection at checkout with a transaction around `;` (begin,
    select, rollback): a tenth of the receiver's CPU and of the worker's at 150 events/s, most of
    it in the system calls of three round trips. `SELECT 1` on the simple query protocol tells
    the same (is the server still there?) in one (asyncpg fails on an empty statement). A
    connection that fails it is discarded and the pool connects again, as with `pool_pre_ping`:
    after a server restart the first request still works."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        try:
            dbapi_connection.run_async(lambda driver_connection: driver_connection.execute("SELECT 1"))
        except Exception as exc:  # closed, reset, timed out: the pool discards it and connects again
            raise DisconnectionError(f"connection failed its ping: {type(exc).__name__}") from exc


def _configure_sqlite(engine: AsyncEngine) -> None:
    """WAL so readers never block the writer; `BEGIN IMMEDIATE` so a transaction that reads and
    then writes cannot fail half-way on a stale snapshot when web and worker write at once."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
