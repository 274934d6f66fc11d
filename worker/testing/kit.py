"""The `dodo` fixture's object: the real receiver over HTTP and the real worker in this event
loop, on a fresh database and Redis queue, with the fake Dodo API and a hook catcher beside them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from worker.registry import Registry, default_registry, load_handler_modules
from worker.settings import Settings, load_settings
from worker.signing import generate_secret, new_message_id
from worker.store import Database, EventStatus, inbox
from worker.testing import TEST_SECRET, envelope, sign
from worker.testing.fakedodo import FakeDodo, serve
from worker.testing.hooks import HookCatcher
from worker.testing.serving import serve_app, wait_until

# `send` returns once an attempt has ended: the event settled, or it failed and waits for a retry.
ATTEMPTED = (EventStatus.PROCESSED, EventStatus.IGNORED, EventStatus.DEAD, EventStatus.FAILED)
HOOK_URL = "{hook_url}"  # in the catalog's `hooks`: the kit's hook catcher (docs/testing.md)
WAIT_SECONDS = 10.0

# What the kit sets unless `dodo_settings` does: short back-offs so that no test sleeps through one.
KIT_DEFAULTS: dict[str, Any] = {
    "MAX_ATTEMPTS": 3,
    "RETRY_BASE_SECONDS": 0.01,
    "RETRY_MAX_SECONDS": 0.05,
    "HOOKS_RETRY_BASE_SECONDS": 0.01,
    "HOOKS_RETRY_MAX_SECONDS": 0.05,
    "HOOKS_ALLOW_PRIVATE_NETWORKS": True,
    "HOOKS_ALLOW_HTTP": True,
    "WEBHOOK_ENQUEUE_WINDOW_SECONDS": 0.0,
    "WORKER_POLL_SECONDS": 0.01,
    "SHUTDOWN_GRACE_SECONDS": 5,
    "DODO_PAYMENTS_WEBHOOK_KEY": TEST_SECRET,
}


class Status(str):
    """An event's status that remembers its event, so that the plugin's assertion report of
    `assert event.status == "processed"` can show the event (worker/testing/plugin.py)."""

    __slots__ = ("dodo_event",)
    dodo_event: SentEvent


@dataclass
class SentEvent:
    """An event as `events show --json` reads it; its repr lists each handler run and error so
    that a failing `assert event.status == "processed"` explains itself."""

    id: str
    type: str
    status: str
    data: dict[str, Any]
    handlers: list[dict[str, Any]]
    detail: dict[str, Any] = field(repr=False)

    @classmethod
    def from_detail(cls, detail: dict[str, Any]) -> SentEvent:
        body = detail.get("body")
        if isinstance(body, str | bytes):
            try:
                body = json.loads(body)
            except ValueError:
                body = None
        data = body.get("data") if isinstance(body, dict) else None
        status = Status(detail["status"])
        event = cls(id=detail["id"], type=detail["type"], status=status,
                    data=data if isinstance(data, dict) else {}, handlers=detail["handlers"], detail=detail)
        status.dodo_event = event
        return event

    def handler(self, name: str) -> dict[str, Any]:
        """The handler whose name is `name` or ends with `.name`."""
        for handler in self.handlers:
            if handler["name"] == name or handler["name"].endswith(f".{name}"):
                return handler
        raise KeyError(f"no handler {name!r} ran on {self.type} {self.id}: {[h['name'] for h in self.handlers]}")

    def __repr__(self) -> str:
        """One line for the event, one per handler with each attempt and its error's last line
        (pytest shows about 8 lines of an assertion's explanation; `handlers` has the rest)."""
        lines = [f"<SentEvent {self.type} {self.id} status={str(self.status)!r} "
                 f"attempts={self.detail.get('attempts')}>"]
        if not self.handlers:
            lines.append("  no handler matched this event type")
        for handler in self.handlers:
            runs = "; ".join(_run_line(run) for run in handler.get("runs", []))
            lines.append(f"  handler {handler['name']}: {handler['status']}, "
                         f"{handler['attempts']} attempt(s) this round" + (f": {runs}" if runs else ""))
        return "\n".join(lines)

    __str__ = __repr__


def _run_line(run: dict[str, Any]) -> str:
    lines = str(run.get("error") or "").strip().splitlines()
    return f"#{run['attempt']} {run['status']}" + (f" ({lines[-1]})" if lines else "")


@dataclass
class Dodo:
    """What a merchant's test drives (see docs/testing.md)."""

    settings: Settings
    registry: Registry
    url: str  # the receiver's base URL
    fake_api: FakeDodo
    fake_api_url: str
    hook_catcher: HookCatcher
    http: httpx.AsyncClient
    db: Database

    @property
    def hooks(self) -> list[Any]:
        """The hook deliveries captured so far (each with `type`, `data`, `headers`, `verified`)."""
        return self.hook_catcher.deliveries

    async def wait_for_hooks(self, count: int = 1, seconds: float = WAIT_SECONDS) -> list[Any]:
        """The captured deliveries once there are at least `count` (delivery runs in the worker,
        after the event's handlers)."""

        async def enough() -> bool:
            return len(self.hooks) >= count

        await wait_until(enough, seconds, what=f"{count} hook deliveries (got {len(self.hooks)})")
        return list(self.hooks)

    @property
    def hook_url(self) -> str:
        return self.hook_catcher.url

    @property
    def secret(self) -> str:
        return self.settings.webhook_secrets[0]

    # sending ----------------------------------------------------------------------------------
    async def post(self, body: bytes | str, headers: Mapping[str, str]) -> httpx.Response:
        """POST raw bytes to the receiver's /webhooks/dodo, headers as given."""
        content = body.encode() if isinstance(body, str) else body
        return await self.http.post(f"{self.url}/webhooks/dodo", content=content, headers=dict(headers))

    async def send(self, event_type: str, data: dict[str, Any] | None = None, id: str | None = None,
                   *, settle: bool = False) -> SentEvent:
        """The sample of `event_type` with `data` merged in deeply, signed, POSTed through the
        receiver; returns once it is processed, ignored, dead or has failed an attempt
        (`settle=True`: once processed, ignored or dead, after its retries)."""
        text = json.dumps(envelope(event_type, data))
        event_id = id or new_message_id()
        response = await self.post(text, sign(text, self.secret, event_id))
        if response.status_code != 200:
            raise AssertionError(f"the receiver answered {response.status_code}: {response.text}")
        return await (self.settle(event_id) if settle else self.wait(event_id, *ATTEMPTED))

    async def event(self, event_id: str) -> SentEvent:
        detail = await self._detail(event_id)
        if detail is None:
            raise KeyError(f"no event {event_id!r}")
        return SentEvent.from_detail(detail)

    async def wait(self, event_id: str, *statuses: str, seconds: float = WAIT_SECONDS) -> SentEvent:
        """The event once its status is one of `statuses` (default: settled)."""
        return SentEvent.from_detail(await wait_for_status(self.db, event_id, statuses, seconds))

    async def settle(self, event_id: str, seconds: float = WAIT_SECONDS) -> SentEvent:
        """The event once processed, ignored or dead (after its retries, which the kit makes fast)."""
        return await self.wait(event_id, *EventStatus.SETTLED, seconds=seconds)

    async def replay(self, event_id: str) -> SentEvent:
        """`POST /v1/events/{id}/replay`, then the event once its new round has ended."""
        response = await self.http.post(f"{self.url}/v1/events/{event_id}/replay", headers=self._bearer())
        if response.status_code != 200:
            raise AssertionError(f"replay of {event_id} answered {response.status_code}: {response.text}")
        return await self.wait(event_id, *ATTEMPTED)

    # reading ----------------------------------------------------------------------------------
    async def grants(self, metadata: Mapping[str, str] | None = None, **filters: str) -> list[dict[str, Any]]:
        """What `GET /v1/entitlements` answers for these filters (customer_id, email, payment_id,
        subscription_id, status; `metadata={"order_id": ...}`)."""
        params = {**filters, **{f"metadata.{k}": v for k, v in (metadata or {}).items()}}
        response = await self.http.get(f"{self.url}/v1/entitlements", params=params, headers=self._bearer())
        if response.status_code != 200:
            raise AssertionError(f"GET /v1/entitlements answered {response.status_code}: {response.text}")
        found: list[dict[str, Any]] = response.json()["entitlements"]
        return found

    async def reconcile(self, since: datetime | None = None, until: datetime | None = None, *,
                        dry_run: bool = False, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        """A reconciliation scan against `fake_api`, as `dodo-worker reconcile --json` runs it;
        returns its report once the events it created have been handled."""
        import typer

        from worker.cli.reconcile import _reconcile

        try:
            report = await _reconcile(self.settings, since, until, dry_run, metadata or {}, False)
        except typer.Exit as exc:
            raise AssertionError(f"reconcile failed (exit {exc.exit_code}); see the output above") from None
        for repaired in [] if dry_run else report.get("repaired", []):
            await self.settle(repaired["event_id"])
        return report

    async def _detail(self, event_id: str) -> dict[str, Any] | None:
        return await event_detail(self.db, event_id)

    def _bearer(self) -> dict[str, str]:
        token = self.settings.WORKER_API_TOKEN
        assert token is not None
        return {"authorization": f"Bearer {token.get_secret_value()}"}


async def event_detail(db: Database, event_id: str) -> dict[str, Any] | None:
    """The event as `events show --json` prints it, or None when it was never stored."""
    async with db.sessions() as session:
        return await inbox.event_detail(session, event_id)


async def wait_for_status(db: Database, event_id: str, statuses: tuple[str, ...] = (),
                          seconds: float = WAIT_SECONDS, every: float = 0.01) -> dict[str, Any]:
    """The event's detail once its status is one of `statuses` (default: settled); on time-out an
    AssertionError that shows the event as it is (its handlers, attempts and errors)."""
    wanted = statuses or EventStatus.SETTLED

    async def reached() -> dict[str, Any] | None:
        detail = await event_detail(db, event_id)
        return detail if detail is not None and detail["status"] in wanted else None

    try:
        found: dict[str, Any] = await wait_until(reached, seconds, what=f"event {event_id} to be {'/'.join(wanted)}",
                                                 every=every)
    except AssertionError:
        last = await event_detail(db, event_id)
        raise AssertionError(f"event {event_id} did not become {'/'.join(wanted)} within {seconds}s: "
                             f"{SentEvent.from_detail(last) if last else 'never stored'}") from None
    return found


# building --------------------------------------------------------------------------------------

def handlers_of(modules: list[str]) -> Registry:
    """A registry of the default registry's handlers that come from `modules` (or their
    submodules): what a production process that imports only those modules would run."""
    load_handler_modules(modules)
    registry = Registry()
    for handler in default_registry:
        module = getattr(handler.func, "__module__", "") or ""
        if any(module == m or module.startswith(f"{m}.") for m in modules):
            registry.add(handler.func, handler.patterns, name=handler.name, batched=handler.batched,
                         prepare=handler.prepare)
    return registry


@contextlib.contextmanager
def resolved_catalog(path: Path | None, hook_url: str) -> Any:
    """A catalog whose hooks name `{hook_url}`, with the catcher's URL put in: a copy beside it
    (its relative file paths still resolve), removed after the test."""
    if path is None or not path.exists() or HOOK_URL not in path.read_text():
        yield None
        return
    copy_path = path.with_name(f".{path.stem}.dodo-test-{uuid.uuid4().hex[:8]}.toml")
    copy_path.write_text(path.read_text().replace(HOOK_URL, hook_url))
    try:
        yield copy_path
    finally:
        copy_path.unlink(missing_ok=True)


_template_dir: str | None = None


async def sqlite_database(tmp_dir: Path) -> str:
    """A migrated SQLite file: a copy of one migrated once per session (migrations take longer
    than a test)."""
    global _template_dir
    from worker.store.migrate import upgrade

    if _template_dir is None or not os.path.exists(os.path.join(_template_dir, "template.db")):  # noqa: ASYNC240
        directory = tempfile.mkdtemp(prefix="dodo-worker-kit-")
        await upgrade(f"sqlite+aiosqlite:///{directory}/template.db")
        _template_dir = directory
    target = tmp_dir / f"dodo-{uuid.uuid4().hex[:8]}.db"
    shutil.copyfile(Path(_template_dir, "template.db"), target)
    return f"sqlite+aiosqlite:///{target}"


@contextlib.asynccontextmanager
async def server_database(admin_url: str) -> AsyncIterator[str]:
    """A database of its own on TEST_DATABASE_URL's server, migrated, dropped afterwards."""
    from sqlalchemy.engine import make_url

    from worker.store.migrate import upgrade

    name = f"dodo_kit_{uuid.uuid4().hex[:12]}"
    admin = Database(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.engine.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        await upgrade(url)
        yield url
    finally:
        async with admin.engine.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


@contextlib.asynccontextmanager
async def database(tmp_dir: Path, backend: str | None = None) -> AsyncIterator[str]:
    """A fresh migrated database: on `backend` ('sqlite', or 'postgresql' on TEST_DATABASE_URL's
    server), or when None on TEST_DATABASE_URL's server if it is set, else SQLite."""
    admin_url = os.environ.get("TEST_DATABASE_URL")
    if backend == "sqlite" or (backend is None and not admin_url):
        yield await sqlite_database(tmp_dir)
        return
    if not admin_url:
        raise RuntimeError(f"a {backend} database needs TEST_DATABASE_URL (an admin URL of the server)")
    async with server_database(admin_url) as url:
        yield url


async def delete_keys(redis_url: str, queue_name: str, event_ids: list[str]) -> None:
    """The test's keys in a shared Redis: its queue's and the arq jobs of its events."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        for pattern in (f"{queue_name}*", f"arq:*:{queue_name}:*"):
            async for key in client.scan_iter(match=pattern, count=500):
                await client.delete(key)
        for event_id in event_ids:
            await client.delete(*(f"arq:{kind}:{event_id}" for kind in ("job", "result", "retry", "in-progress")))
    finally:
        await client.aclose()


async def all_event_ids(db: Database) -> list[str]:
    """Every stored event's id, for the clean-up. On SQLite a plain read, not through the store's
    `BEGIN IMMEDIATE`: a teardown must not wait on the write lock that a worker task cut short
    by the stop may still hold (a teardown was seen waiting out the 30 s busy timeout, then failing)."""
    from sqlalchemy import select

    from worker.store import EventRow

    url = db.engine.url
    if url.get_backend_name() == "sqlite" and url.database:
        return await asyncio.to_thread(_sqlite_event_ids, url.database)
    async with db.sessions() as session:
        return list(await session.scalars(select(EventRow.id)))


def _sqlite_event_ids(path: str) -> list[str]:
    """None when the test took the database or its tables away (the queue's keys go by name)."""
    import sqlite3

    if not os.path.exists(path):
        return []
    connection = sqlite3.connect(path, timeout=5, isolation_level=None)  # WAL: reading needs no lock
    try:
        return [row[0] for row in connection.execute("SELECT id FROM events")]
    except sqlite3.OperationalError:  # no such table
        return []
    finally:
        connection.close()


def kit_settings(given: Mapping[str, Any], extra: dict[str, Any], forced: dict[str, Any]) -> Settings:
    """The kit's defaults and `extra`, then the merchant's `dodo_settings`, then `forced`."""
    values: dict[str, Any] = {**KIT_DEFAULTS, "HOOKS_SIGNING_KEY": generate_secret(),
                              "WORKER_API_TOKEN": "tok_" + secrets.token_hex(16), **extra}
    values.update({k: v for k, v in given.items() if v is not None})
    return load_settings(**{**values, **forced})


@contextlib.asynccontextmanager
async def running_worker(settings: Settings, registry: Registry, **options: Any) -> AsyncIterator[Any]:
    """The worker as `dodo-worker worker` runs it (arq under the supervisor), in this loop;
    `options` go to the supervisor (e.g. `poll_delay`)."""
    import asyncio

    from worker.supervisor import WorkerSupervisor

    supervisor = WorkerSupervisor(settings, registry, load_modules=False, **options)
    task = asyncio.create_task(supervisor.run())

    async def ready() -> bool:
        if task.done():
            task.result()
        current = supervisor.current
        return current is not None and "runtime" in current.ctx

    try:
        await wait_until(ready, what="the worker to start", every=0.005)
        yield supervisor
    finally:
        supervisor.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def start(given: Mapping[str, Any], tmp_dir: Path, shared_redis: Any, backend: str | None = None
                ) -> AsyncIterator[Dodo]:
    """Everything the `dodo` fixture holds, started in order and stopped in reverse (`backend`:
    see `database`)."""
    from worker.web.app import create_app

    given = {k: v for k, v in given.items() if k != "DATABASE_URL"}
    servers: list[Any] = []
    async with contextlib.AsyncExitStack() as stack:
        fake = FakeDodo()
        fake_url = await stack.enter_async_context(serve(fake, servers))
        catcher = HookCatcher()
        await stack.enter_async_context(catcher.serving(servers))
        redis_url = given.get("REDIS_URL") or shared_redis().url
        database_url = await stack.enter_async_context(database(tmp_dir, backend))
        extra = {"DODO_PAYMENTS_API_KEY": fake.api_key, "DODO_PAYMENTS_BASE_URL": fake_url}
        forced = {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                  "QUEUE_NAME": f"dodo-kit:{uuid.uuid4().hex[:10]}"}
        settings = kit_settings(given, extra, forced)
        catalog = stack.enter_context(resolved_catalog(settings.entitlements_path, catcher.url))
        if catalog is not None:
            settings = kit_settings(given, extra, {**forced, "ENTITLEMENTS_FILE": catalog})
        catcher.secret = settings.HOOKS_SIGNING_KEY.get_secret_value() if settings.HOOKS_SIGNING_KEY else None
        registry = handlers_of(settings.handler_modules)
        db = Database(settings.DATABASE_URL)
        stack.push_async_callback(db.dispose)
        stack.push_async_callback(_clean_redis, settings, db)
        url = await stack.enter_async_context(serve_app(create_app(settings, registry), "the receiver to start",
                                                        lifespan="on", servers=servers))
        await stack.enter_async_context(running_worker(settings, registry))
        # Teardown runs in reverse: every server is told to stop at once, then each is awaited.
        stack.callback(_stop_all, servers)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=15))
        yield Dodo(settings=settings, registry=registry, url=url, fake_api=fake, fake_api_url=fake_url,
                   hook_catcher=catcher, http=http, db=db)


def _stop_all(servers: list[Any]) -> None:
    for server in servers:
        server.should_exit = True


async def _clean_redis(settings: Settings, db: Database) -> None:
    assert settings.REDIS_URL is not None
    await delete_keys(settings.REDIS_URL, settings.QUEUE_NAME, await all_event_ids(db))
