"""What every CLI command shares: settings with a one-line error, JSON output, the dev state, and
`run`, which checks the database first and turns an unreachable database or Redis, or missing
tables, into one line and exit code 2 instead of a traceback."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import warnings
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from worker.runtime import RedisUnavailable, connection_problem
from worker.settings import ConfigError, Settings, load_settings
from worker.store.database import StoreUnavailable

T = TypeVar("T")
console = Console(stderr=True)
DEV_STATE_DIR = Path(".dev")
DEV_REDIS_FILE = DEV_STATE_DIR / "redis-url"
# The settings the command loaded (settings_or_exit): `run` checks their database.
_loaded: list[Settings] = []


def fail(message: str, code: int = 2) -> NoReturn:
    console.print(f"[red]dodo-worker:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    try:
        settings = load_settings(**overrides)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    if not settings.REDIS_URL and DEV_REDIS_FILE.exists() and "REDIS_URL" not in os.environ:
        # `dodo-worker dev` is running here with its embedded Redis: talk to that one.
        settings.REDIS_URL = DEV_REDIS_FILE.read_text().strip() or None
    _loaded[:] = [settings]
    return settings


def run(coro: Coroutine[Any, Any, T], *, check_database: bool = True) -> T:
    """Run a command's coroutine. The database of the command's settings is checked first (it
    answers, its tables are there; a missing SQLite file is not created), and a database or Redis
    lost on the way ends the command with one line, exit code 2."""
    settings = _loaded[-1] if _loaded else None
    try:
        return asyncio.run(_checked(coro, settings, check_database))
    except (StoreUnavailable, RedisUnavailable) as exc:
        fail(str(exc))


async def _checked(coro: Coroutine[Any, Any, T], settings: Settings | None, check_database: bool) -> T:
    from worker.store.migrate import check_schema

    try:
        if settings is not None and check_database:
            await check_schema(settings.DATABASE_URL)
        return await coro
    except Exception as exc:
        problem = connection_problem(settings, exc) if settings is not None else None
        if problem is None:
            raise
        raise problem from None
    finally:
        with warnings.catch_warnings():  # not awaited when the check failed: that is on purpose
            warnings.simplefilter("ignore", RuntimeWarning)
            coro.close()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
