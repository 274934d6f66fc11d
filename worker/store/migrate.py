"""Schema migrations with Alembic, run on a connection we open (async engines included)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from worker.store.database import (
    UPGRADE_HINT,
    SchemaMissing,
    StoreUnavailable,
    create_engine,
    display_url,
    no_tables,
    sqlite_file,
    store_problem,
)

CHECK_TIMEOUT_SECONDS = 10.0
VERSION_TABLE = "alembic_version"  # alembic's default, which migrations/env.py keeps
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


async def upgrade(url: str, revision: str = "head") -> None:
    """Bring the database at `url` to `revision` (creating the SQLite file if needed)."""
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_upgrade, revision)
    finally:
        await engine.dispose()


def _upgrade(connection: Any, revision: str) -> None:
    config = alembic_config()
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def current_revisions(url: str) -> tuple[str, ...]:
    """The revisions recorded in the database; () when it has no tables."""
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            return tuple(await conn.run_sync(_recorded_revisions))
    finally:
        await engine.dispose()


def _recorded_revisions(connection: Any) -> list[str]:
    # Read alembic's table directly: its MigrationContext logs two INFO lines per look.
    if not inspect(connection).has_table(VERSION_TABLE):
        return []
    return list(connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())  # noqa: S608


async def is_current(url: str) -> bool:
    """True when the database is at the newest revision."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    return set(await current_revisions(url)) == set(heads)


async def check_schema(url: str) -> None:
    """What every process and command runs before it touches the database: raise StoreUnavailable
    (SchemaMissing, DatabaseUnreachable) with one line naming the fix unless the database answers
    and has this dodo-worker's tables. A SQLite file that does not exist is not created."""
    try:
        path = sqlite_file(url)
        if path is not None and not path.exists():
            raise no_tables(url)
        current = await asyncio.wait_for(current_revisions(url), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        problem = store_problem(url, exc)
        if problem is None:
            raise
        raise problem from None
    if not current:
        raise no_tables(url)
    behind = _behind(current)
    if behind:
        raise SchemaMissing(f"the database at {display_url(url)} is at revision {', '.join(behind)}, "
                            f"older than this dodo-worker's: {UPGRADE_HINT}")


def _behind(current: tuple[str, ...]) -> list[str]:
    """The current revisions that are older than the newest one. A revision this code does not
    know is newer (the schema was upgraded for newer code): old processes keep working with it."""
    script = ScriptDirectory.from_config(alembic_config())
    heads = set(script.get_heads())
    known = {revision.revision for revision in script.walk_revisions()}
    return [revision for revision in current if revision in known and revision not in heads]


__all__ = ["SchemaMissing", "StoreUnavailable", "check_schema", "is_current", "upgrade"]
