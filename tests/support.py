"""A real dodo-worker stack for tests: the Litestar app served by uvicorn over real HTTP, the
real arq worker, real Redis and a fresh SQL database (SQLite or PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import uvicorn
from sqlalchemy import select
from typer.testing import CliRunner

from worker.cli.main import app as cli_app
from worker.registry import Registry
from worker.runtime import Runtime
from worker.samples import load_sample
from worker.settings import Settings, load_settings
from worker.signing import generate_secret, new_message_id, signed_headers
from worker.store import Database, EventRow, HandlerRunRow
from worker.store.migrate import upgrade
from worker.supervisor import WorkerSupervisor
from worker.testing.kit import server_database
from worker.testing.serving import free_port
from worker.testing.serving import wait_until as kit_wait_until
from worker.web.app import create_app

WAIT_SECONDS = 20.0
_cli_lock = threading.Lock()


async def wait_until(predicate: Callable[[], Awaitable[Any]], timeout: float = WAIT_SECONDS,
                     what: str = "condition") -> Any:
    """Await a condition by polling it (the event we wait for happens in another task/process):
    the test kit's poll, under the `timeout` name this suite uses."""
    return await kit_wait_until(predicate, timeout, what=what, every=0.02)


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config, what: str = "uvicorn to start") -> AsyncIterator[str]:
    """Serve `config` (host and port set) over real HTTP in this event loop; yields its base URL."""
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
    if kind == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_dir}/dodo-{uuid.uuid4().hex[:8]}.db"
        await upgrade(url)
        yield url
        return
    async with server_database(os.environ["TEST_DATABASE_URL"]) as url:
        yield url


@dataclass
class Stack:
    settings: Settings
    registry: Registry
    base_url: str = ""
    secret: str = ""
    db: Database = field(init=False)
    http: httpx.AsyncClient = field(init=False)
    _server: uvicorn.Server | None = None
    _server_task: asyncio.Task[None] | None = None
    _worker: Any = None
    _worker_task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.db = Database(self.settings.DATABASE_URL)
        self.http = httpx.AsyncClient(timeout=15)

    # processes ---------------------------------------------------------------------------
    async def start_web(self) -> None:
        port = free_port()
        config = uvicorn.Config(create_app(self.settings, self.registry), host="127.0.0.1", port=port,
                                log_level="warning", lifespan="on", access_log=False)
        self._server = uvicorn.Server(config)
        self._server_task = asyncio.create_task(self._server.serve())
        await wait_until(self._server_started, what="uvicorn to start")
        self.base_url = f"http://127.0.0.1:{port}"

    async def _server_started(self) -> bool:
        assert self._server_task is not None
        if self._server_task.done():
            self._server_task.result()
        return bool(self._server and self._server.started)

    async def stop_web(self) -> None:
        if self._server is not None and self._server_task is not None:
            self._server.should_exit = True
            await self._server_task
        self._server = self._server_task = None

    async def start_worker(self, **overrides: Any) -> None:
        """The worker as `dodo-worker worker` runs it: arq under our supervisor."""
        options = {"poll_delay": 0.02, **overrides}
        self._worker = WorkerSupervisor(self.settings, self.registry, load_modules=False, **options)
        self._worker_task = asyncio.create_task(self._worker.run())
        await wait_until(self._worker_ready, what="the arq worker to start")

    async def _worker_ready(self) -> bool:
        assert self._worker_task is not None
        if self._worker_task.done():
            self._worker_task.result()
        current = self._worker.current
        return current is not None and "runtime" in current.ctx

    @property
    def worker_runtime(self) -> Runtime:
        return self._worker.current.ctx["runtime"]  # type: ignore[no-any-return]

    async def stop_worker(self) -> None:
        if self._worker is not None:
            self._worker.request_stop()
        if self._worker_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker_task
        self._worker = self._worker_task = None

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
        headers = signed_headers(secret or self.secret, text, event_id, timestamp)
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
        async def check() -> EventRow | None:
            row = await self.event(event_id)
            return row if row is not None and row.status in statuses else None

        return await wait_until(check, timeout, what=f"event {event_id} to be {'/'.join(statuses)}")  # type: ignore[no-any-return]

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
    values: dict[str, Any] = {
        "DODO_PAYMENTS_WEBHOOK_KEY": generate_secret(),
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "QUEUE_NAME": f"dodo-test:{uuid.uuid4().hex[:10]}",
        "HANDLER_MODULES": "",
        "MAX_ATTEMPTS": 3,
        "RETRY_BASE_SECONDS": 0.05,
        "RETRY_MAX_SECONDS": 1.0,
        "SWEEP_AFTER_SECONDS": 0.0,
        "SHUTDOWN_GRACE_SECONDS": 5,
        "WORKER_API_TOKEN": "tok_" + secrets.token_hex(16),
    }
    values.update(overrides)
    return load_settings(**values)


async def delete_keys(redis_url: str, patterns: Iterable[str]) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        for pattern in patterns:
            async for key in client.scan_iter(match=pattern, count=500):
                await client.delete(key)
    finally:
        await client.aclose()
