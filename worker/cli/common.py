"""What every CLI command shares: settings with a one-line error, JSON output, the dev state."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from worker.settings import ConfigError, Settings, load_settings

T = TypeVar("T")
console = Console(stderr=True)
DEV_STATE_DIR = Path(".dev")
DEV_REDIS_FILE = DEV_STATE_DIR / "redis-url"


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
    return settings


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str) + "\n")
