"""SQL helpers that differ per dialect: race-safe insert-or-ignore and per-key transaction locks."""

from __future__ import annotations

import contextlib
import hashlib
from typing import Any

from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Session, SessionTransaction

from worker.store.fit import fit_row


def dialect_name(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


_STATEMENTS: dict[tuple[str, str, bool], Any] = {}


def _insert_ignore_statement(model: type[DeclarativeBase], dialect: str, *, returning_id: bool = False) -> Any:
    """`INSERT .. ON CONFLICT DO NOTHING` without values, built once per table and dialect: the
    row goes as bound parameters, so SQLAlchemy neither coerces ~30 inline values nor computes a
    new cache key per call (about 3 ms per order before). `returning_id`: it returns the id of
    each row it inserted."""
    table: Any = model.__table__
    key = (table.name, dialect, returning_id)
    stmt = _STATEMENTS.get(key)
    if stmt is None:
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(table).on_conflict_do_nothing()
        else:
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            stmt = sqlite_insert(table).on_conflict_do_nothing()
        if returning_id:
            stmt = stmt.returning(table.c.id)
        _STATEMENTS[key] = stmt
    return stmt


async def insert_ignore(session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]) -> bool:
    """INSERT .. ON CONFLICT DO NOTHING (any unique constraint); True when the row was inserted.

    Two workers inserting the same row at once: PostgreSQL makes the second wait for the first
    and then do nothing; SQLite serialises writers (BEGIN IMMEDIATE) so the second sees the row."""
    name = dialect_name(session)
    if name not in ("postgresql", "sqlite"):  # pragma: no cover - a savepoint absorbs the duplicate
        from sqlalchemy import insert
        from sqlalchemy.exc import IntegrityError

        try:
            async with session.begin_nested():
                await session.execute(insert(model).values(**values))
        except IntegrityError:
            return False
        return True
    fit_row(model.__table__, values)
    with _flush_changes_only(session):
        result = await session.execute(_insert_ignore_statement(model, name), values)
    return bool(getattr(result, "rowcount", 0) == 1)


def _flush_changes_only(session: AsyncSession) -> Any:
    """SQLAlchemy flushes pending objects before every Core statement, which sent each grant's
    audit and metadata rows on their own. New rows refer only to rows already inserted, so they
    can wait for the next query or the commit and go there together; changed or deleted rows
    are flushed first, since they may free the key an insert takes (a plan change)."""
    return contextlib.nullcontext() if session.dirty or session.deleted else session.no_autoflush


HELD_LOCKS = "dodo_worker.held_locks"  # session.info: lock keys this transaction holds


async def insert_ignore_many(session: AsyncSession, model: type[DeclarativeBase],
                             rows: list[dict[str, Any]]) -> set[Any]:
    """`insert_ignore` for several rows in one statement (SQLAlchemy's "insertmanyvalues"); the
    primary keys of the rows that were inserted."""
    name = dialect_name(session)
    if name not in ("postgresql", "sqlite"):  # pragma: no cover
        return {row["id"] for row in rows if await insert_ignore(session, model, row)}
    statement = _insert_ignore_statement(model, name, returning_id=True)
    for row in rows:
        fit_row(model.__table__, row)
    with _flush_changes_only(session):
        if len(rows) == 1:
            result = await session.execute(statement, rows[0])
        else:
            result = await session.execute(statement, rows)
    return set(result.scalars())


async def lock(session: AsyncSession, key: str) -> None:
    """Serialise transactions about one payment or subscription until this one ends.

    A refund and its payment handled at once by two workers must not both miss each other (the
    refund finding no grant, the grant finding no refund). PostgreSQL: a transaction-scoped
    advisory lock; SQLite: writers are already serialised by BEGIN IMMEDIATE."""
    await lock_many(session, [key])


async def lock_many(session: AsyncSession, keys: list[str]) -> None:
    """`lock` for several keys in one statement, in a fixed order, so two transactions wanting
    the same keys queue instead of deadlocking. Keys this transaction holds already are skipped
    (a batch of events locks its payments once, before its handlers run)."""
    if dialect_name(session) != "postgresql":
        return
    held: set[str] = session.info.setdefault(HELD_LOCKS, set())
    wanted = sorted({_lock_number(key) for key in keys if key not in held})
    if not wanted:
        return
    with session.no_autoflush:  # a lock depends on no pending row; they go later, together
        if len(wanted) == 1:
            await session.execute(_LOCK, {"n": wanted[0]})
        else:
            await session.execute(_LOCK_MANY, {"keys": wanted})
    held.update(keys)


def _lock_number(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


_LOCK = text("SELECT pg_advisory_xact_lock(:n)")
# unnest keeps the array's order, which is sorted: locks are taken in that order.
_LOCK_MANY = text("SELECT pg_advisory_xact_lock(k) FROM unnest(CAST(:keys AS bigint[])) AS k")


PENDING_ROWS = "dodo_worker.pending_rows"  # session.info: rows to insert before the commit


def insert_later(session: AsyncSession, model: type[DeclarativeBase], values: dict[str, Any]) -> None:
    """Queue a row that nothing reads back in this transaction (an audit or metadata row). The
    transaction's queued rows go in one INSERT per table before it commits (or at `write_pending`):
    a batch of 50 orders writes its 100 audit rows in one statement, with no ORM object each."""
    pending: dict[Any, list[dict[str, Any]]] = session.info.setdefault(PENDING_ROWS, {})
    pending.setdefault(model.__table__, []).append(fit_row(model.__table__, values))


async def write_pending(session: AsyncSession) -> None:
    """Insert the queued rows now (before a row that must come after them in id order)."""
    pending = session.info.pop(PENDING_ROWS, None)
    for table, rows in (pending or {}).items():
        await session.execute(insert(table), rows)


@event.listens_for(Session, "before_commit")
def _write_pending_rows(session: Session) -> None:
    """Runs inside the async session's greenlet, so the sync `execute` is allowed here."""
    pending = session.info.pop(PENDING_ROWS, None)
    for table, rows in (pending or {}).items():
        session.execute(insert(table), rows)


@event.listens_for(Session, "after_transaction_end")
def _forget_transaction_state(session: Session, transaction: SessionTransaction) -> None:
    """Locks and caches kept in `session.info` last as long as the transaction that made them."""
    if transaction.parent is None:
        for key in TRANSACTION_INFO:
            session.info.pop(key, None)


TRANSACTION_INFO = [HELD_LOCKS, PENDING_ROWS]  # modules add the session.info keys that end with a transaction
