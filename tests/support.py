"""A real dodo-worker stack for tests, built from the test kit's own parts (worker/testing: the
receiver served over real HTTP by `serve_app`, the supervised arq worker of `running_worker`, the
kit's settings, databases, signing and event reading), so that every test on `stack` or
`stack_factory` exercises the kit a merchant uses. Real Redis and a fresh SQL database (SQLite or
PostgreSQL) per test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select
from typer.testing import CliRunner

from worker.cli.main import app as cli_app
from worker.registry import Registry
from worker.runtime import Runtime
from worker.samples import load_sample
from worker.settings import Settings
from worker.signing import generate_secret, new_message_id
from worker.store import Database, EventRow, HandlerRunRow
from worker.testing import sign
from worker.testing.kit import SentEvent, database, event_detail, kit_settings, running_worker, wait_for_status
from worker.testing.serving import free_port, serve_app
from worker.testing.serving import wait_until as kit_wait_until
from worker.web.app import create_app

__all__ = ["Stack", "delete_keys", "free_port", "fresh_database", "make_settings", "sample_envelope",
           "serving", "settings_env", "wait_until"]

WAIT_SECONDS = 20.0
_cli_lock = threading.Lock()


async def wait_until(predicate: Callable[[], Awaitable[Any]], timeout: float = WAIT_SECONDS,
                     what: str = "condition") -> Any:
    """Await a condition by polling it (the event we wait for happens in another task/process):
    the test kit's poll, under the `timeout` name this suite uses."""
    return await kit_wait_until(predicate, timeout, what=what, every=0.02)


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config, what: str = "uvicorn to start") -> AsyncIterator[str]:
    """Serve `config` (host and port set) over real HTTP in this event loop; yields its base URL.
    For a server the kit's `serve_app` cannot make (a TLS config, a chosen host and port)."""
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await wait_until(started, what=what)
    try:
        yield f"http://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def fresh_database(kind: str, tmp_dir: str) -> AsyncIterator[str]:
    """A migrated, empty database of `kind` ('sqlite' or 'postgresql'), dropped afterwards."""
    async with database(Path(tmp_dir), kind) as url:
        yield url


@dataclass
class Stack:
    settings: Settings
    registry: Registry
    base_url: str = ""
    secret: str = ""
    db: Database = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    _web: contextlib.AsyncExitStack | None = None
    app: Any = None  # the Litestar app `start_web` serves (its `state.runtime` once started)
    _worker_exit: contextlib.AsyncExitStack | None = None
    _worker: Any = None

    def __post_init__(self) -> None:
        self.db = Database(self.settings.DATABASE_URL)
        self.http = httpx.AsyncClient(timeout=15)

    @property
    def url(self) -> str:
        """The receiver's base URL, under the kit's name (`dodo.url`), for helpers of both."""
        return self.base_url

    # processes (the kit's serve_app and running_worker) ----------------------------------
    async def start_web(self) -> None:
        web = contextlib.AsyncExitStack()
        app = create_app(self.settings, self.registry)
        self.base_url = await web.enter_async_context(serve_app(app, "uvicorn to start", lifespan="on"))
        self._web, self.app = web, app

    async def stop_web(self) -> None:
        if self._web is not None:
            web, self._web = self._web, None
            await web.aclose()

    async def start_worker(self, **overrides: Any) -> None:
        """The worker as `dodo-worker worker` runs it: arq under our supervisor (`overrides` are
        the supervisor's options)."""
        options = {"poll_delay": 0.02, **overrides}
        exit_stack = contextlib.AsyncExitStack()
        self._worker = await exit_stack.enter_async_context(running_worker(self.settings, self.registry, **options))
        self._worker_exit = exit_stack

    @property
    def worker_runtime(self) -> Runtime:
        return self._worker.current.ctx["runtime"]  # type: ignore[no-any-return]

    async def stop_worker(self) -> None:
        if self._worker_exit is not None:
            exit_stack, self._worker_exit = self._worker_exit, None
            await exit_stack.aclose()
        self._worker = None

    async def close(self) -> None:
        await self.stop_worker()
        await self.stop_web()
        await self.http.aclose()
        await self.db.dispose()

    # sending -----------------------------------------------------------------------------
    async def post(self, body: bytes | str, headers: dict[str, str]) -> httpx.Response:
        content = body.encode() if isinstance(body, str) else body
        return await self.http.post(f"{self.base_url}/webhooks/dodo", content=content, headers=headers)

    async def send(self, event_type: str, data: dict[str, Any] | None = None, *, event_id: str | None = None,
                   secret: str | None = None, timestamp: datetime | None = None,
                   envelope: dict[str, Any] | None = None) -> tuple[str, httpx.Response]:
        """Sign and POST an event, as Dodo would. `data` defaults to the bundled sample's."""
        body = envelope if envelope is not None else sample_envelope(event_type, data)
        text = json.dumps(body)
        event_id = event_id or new_message_id()
        headers = sign(text, secret or self.secret, event_id, timestamp)
        return event_id, await self.post(text, headers)

    # reading -----------------------------------------------------------------------------
    async def event(self, event_id: str) -> EventRow | None:
        async with self.db.sessions() as session:
            return await session.get(EventRow, event_id)

    async def runs(self, event_id: str) -> dict[str, HandlerRunRow]:
        async with self.db.sessions() as session:
            rows = await session.scalars(select(HandlerRunRow).where(HandlerRunRow.event_id == event_id))
            return {r.handler: r for r in rows}

    async def wait_status(self, event_id: str, *statuses: str, timeout: float = WAIT_SECONDS) -> EventRow:
        """The event's row once its status is one of `statuses`; on time-out the kit's report of
        the event (each handler, attempt and error)."""

        async def check() -> EventRow | None:
            row = await self.event(event_id)
            return row if row is not None and row.status in statuses else None

        try:
            return await wait_until(check, timeout, what=f"event {event_id} to be {'/'.join(statuses)}")  # type: ignore[no-any-return]
        except AssertionError:
            last = await event_detail(self.db, event_id)
            raise AssertionError(f"event {event_id} did not become {'/'.join(statuses)} within {timeout}s: "
                                 f"{SentEvent.from_detail(last) if last else 'never stored'}") from None

    async def detail(self, event_id: str) -> SentEvent:
        """The event as the kit's `dodo.event` reads it (`events show --json`)."""
        found = await event_detail(self.db, event_id)
        if found is None:
            raise KeyError(f"no event {event_id!r}")
        return SentEvent.from_detail(found)

    async def settle(self, event_id: str, timeout: float = WAIT_SECONDS) -> SentEvent:
        """The event once processed, ignored or dead, as the kit's `dodo.settle` waits for it."""
        return SentEvent.from_detail(await wait_for_status(self.db, event_id, (), timeout, every=0.02))

    async def cli(self, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        """Run `dodo-worker ARGS` in-process with this stack's environment."""
        return await asyncio.to_thread(self._cli, list(args), env or {})

    def _cli(self, args: list[str], extra_env: dict[str, str]) -> tuple[int, str, str]:
        env = settings_env(self.settings) | extra_env
        with _cli_lock:
            result = CliRunner().invoke(cli_app, args, env=env, catch_exceptions=False)
        return result.exit_code, result.stdout, result.stderr


def settings_env(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        env[name] = str(value)
    return env


def sample_envelope(event_type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    try:
        body = load_sample(event_type)
    except KeyError:
        body = {"business_id": "bus_test", "timestamp": "2026-11-23T00:00:00Z", "data": {}}
    body["type"] = event_type
    if data is not None:
        body["data"] = data
    return body


def make_settings(database_url: str, redis_url: str, **overrides: Any) -> Settings:
    """The kit's settings (`kit_settings`) with this suite's defaults, which keep the production
    defaults the kit shortens (hook back-offs, the enqueue window, the poll, private networks
    refused, plain http hooks refused, no hook signing key) so that the suite tests what production does. An override of
    None unsets a value (e.g. WORKER_API_TOKEN=None: the read API is off)."""
    suite = {
        "DODO_PAYMENTS_WEBHOOK_KEY": generate_secret(),
        "QUEUE_NAME": f"dodo-test:{uuid.uuid4().hex[:10]}",
        "HANDLER_MODULES": "",
        "MAX_ATTEMPTS": 3,
        "RETRY_BASE_SECONDS": 0.05,
        "RETRY_MAX_SECONDS": 1.0,
        "SWEEP_AFTER_SECONDS": 0.0,
        "SHUTDOWN_GRACE_SECONDS": 5,
        "WORKER_API_TOKEN": "tok_" + secrets.token_hex(16),
        "HOOKS_SIGNING_KEY": None,
        "HOOKS_ALLOW_PRIVATE_NETWORKS": False,
        "HOOKS_ALLOW_HTTP": False,
        "HOOKS_RETRY_BASE_SECONDS": 5.0,
        "HOOKS_RETRY_MAX_SECONDS": 3600.0,
        "WEBHOOK_ENQUEUE_WINDOW_SECONDS": 0.01,
        "WORKER_POLL_SECONDS": 0.02,
    }
    unset = {k: v for k, v in overrides.items() if v is None}
    forced = {"DATABASE_URL": overrides.pop("DATABASE_URL", database_url), "REDIS_URL": redis_url, **unset}
    return kit_settings({k: v for k, v in overrides.items() if v is not None}, suite, forced)


async def delete_keys(redis_url: str, patterns: Iterable[str]) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        for pattern in patterns:
            async for key in client.scan_iter(match=pattern, count=500):
                await client.delete(key)
    finally:
        await client.aclose()
