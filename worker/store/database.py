"""Engine and sessions for SQLite (default) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from pathlib import Path
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
    after the server comes back (one round trip on asyncpg, see `_ping_in_one_round_trip`).
    `hide_parameters`: SQLAlchemy's errors never quote a statement's values (e-mail addresses,
    licence keys), wherever they are logged or printed."""
    options.setdefault("hide_parameters", True)
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


class StoreUnavailable(Exception):
    """The database cannot serve a process or a command; the message is one line that names the fix."""


class SchemaMissing(StoreUnavailable):
    """No tables (or an older schema than this dodo-worker's): `dodo-worker db upgrade` fixes it."""


class DatabaseUnreachable(StoreUnavailable):
    """The server refused, timed out or rejected the credentials."""


UPGRADE_HINT = "run `dodo-worker db upgrade`"


def display_url(url: str) -> str:
    """The URL as it may be printed: the password is never shown."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: print none of it
        return "(not a URL)"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory ones)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.query.get("mode") == "memory" or parsed.database.startswith("file:"):
        return None
    return Path(parsed.database)


def no_tables(url: str) -> SchemaMissing:
    return SchemaMissing(f"the database at {display_url(url)} has no tables: {UPGRADE_HINT}")


def unreachable(url: str, exc: BaseException) -> DatabaseUnreachable:
    return DatabaseUnreachable(f"cannot reach the database ({display_url(url)}): {short_reason(exc)}")


def short_reason(exc: BaseException) -> str:
    """The driver's own words, first line only (SQLAlchemy's message adds the SQL and a link)."""
    cause = _chain(exc)[-1]
    text = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
    reason = f"{type(cause).__name__}: {text}" if text else type(cause).__name__
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "orig", None) or current.__cause__
    return seen


def is_missing_table(exc: BaseException) -> bool:
    """A query failed because our tables are not there (SQLite or PostgreSQL)."""
    for error in _chain(exc):
        words = f"{type(error).__name__} {error}".lower()
        if "no such table" in words or "undefinedtable" in words or (
            "relation" in words and "does not exist" in words
        ):
            return True
    return False


# asyncpg's errors for a server that is there but will not let us in (wrapped as a DBAPIError).
ASYNCPG_CONNECT_ERRORS = frozenset({
    "InvalidPasswordError", "InvalidAuthorizationSpecificationError", "InvalidCatalogNameError",
    "CannotConnectNowError", "ConnectionDoesNotExistError", "TooManyConnectionsError",
    "ConnectionFailureError", "ClientCannotConnectError",
})


def is_connection_error(exc: BaseException) -> bool:
    """The database could not be reached (refused, reset, timed out, bad credentials, no such file)."""
    from sqlalchemy import exc as sa_exc

    if is_missing_table(exc):
        return False
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DisconnectionError
                  | sa_exc.TimeoutError):
        return True
    return any(isinstance(error, OSError | TimeoutError) or type(error).__name__ in ASYNCPG_CONNECT_ERRORS
               for error in _chain(exc))


def bad_url(url: str, exc: BaseException) -> StoreUnavailable:
    return StoreUnavailable(f"DATABASE_URL {display_url(url)} cannot be used ({short_reason(exc)}): use "
                            "sqlite+aiosqlite:///./dodo-worker.db or postgresql+asyncpg://user@host:5432/db")


def store_problem(url: str, exc: BaseException) -> StoreUnavailable | None:
    """The one-line problem a database failure stands for, or None when it is not one of those."""
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    if isinstance(exc, StoreUnavailable):
        return exc
    if isinstance(exc, ArgumentError | NoSuchModuleError | ModuleNotFoundError):
        return bad_url(url, exc)
    if is_missing_table(exc):
        return no_tables(url)
    if is_connection_error(exc):
        return unreachable(url, exc)
    return None
