"""`dodo-worker web`, `worker` and `dev`: the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Generator
from pathlib import Path

import typer
import uvicorn

from worker.cli.common import DEV_REDIS_FILE, DEV_STATE_DIR, console, fail, run, settings_or_exit
from worker.cli.db import upgrade_or_exit
from worker.embedded_redis import EmbeddedRedis
from worker.logs import configure_logging
from worker.registry import RegistryError
from worker.runtime import BadRedisURL, RedisUnavailable, check_connections, check_redis
from worker.settings import ConfigError, Settings
from worker.signing import generate_secret
from worker.supervisor import WorkerSupervisor, run_worker

log = logging.getLogger("dodo_worker.cli")


class Server(uvicorn.Server):
    """uvicorn's server without its last act: once shut down on a signal, uvicorn raises that
    signal again, which kills `dev` (SIGTERM) before it stops its worker and its embedded Redis, or
    ends it with a KeyboardInterrupt traceback (Ctrl-C). We have shut down cleanly by then."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                getattr(self, "_captured_signals", []).clear()


def _server(settings: Settings, host: str, port: int) -> uvicorn.Server:
    from worker.web.app import create_app

    try:
        app = create_app(settings)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    return Server(server_config(app, settings, host, port))


def server_config(app: object, settings: Settings, host: str, port: int) -> uvicorn.Config:
    """uvicorn as `web` and `dev` run it: h11 with a deadline for request headers (slowloris)."""
    from worker.web.slowloris import protocol_with_header_timeout

    return uvicorn.Config(app, host=host, port=port, log_level=settings.LOG_LEVEL.lower(),  # type: ignore[arg-type]
                          log_config=None, access_log=False, timeout_graceful_shutdown=10, server_header=False,
                          limit_concurrency=1000, timeout_keep_alive=15,
                          # The client address is read by worker/web/clients.py (TRUSTED_PROXIES),
                          # never from X-Forwarded-For that uvicorn would believe from 127.0.0.1.
                          proxy_headers=False,
                          http=protocol_with_header_timeout(settings.HTTP_HEADER_TIMEOUT_SECONDS))


def web_command(
    host: str | None = typer.Option(None, "--host", help="Interface to listen on (HOST, 0.0.0.0)."),
    port: int | None = typer.Option(None, "--port", help="Port (PORT, 8000)."),
) -> None:
    """Run the webhook receiver and the HTTP API."""
    settings = settings_or_exit()
    configure_logging(settings.LOG_LEVEL)
    redis_url = _redis_url_or_exit(settings)
    server = _server(settings, host or settings.HOST, port or settings.PORT)  # configuration first
    _port_free_or_exit(host or settings.HOST, port or settings.PORT)
    _connections_or_exit(settings, redis=False)
    _warn_without_redis(redis_url)
    server.run()


def worker_command() -> None:
    """Run the arq worker: handlers, retries, the sweeper and scheduled jobs."""
    settings = settings_or_exit()
    configure_logging(settings.LOG_LEVEL)
    _redis_url_or_exit(settings)
    _check_or_exit(settings)
    try:  # imports the handler modules: their mistakes are said before the database's
        supervisor = WorkerSupervisor(settings)
    except RegistryError as exc:
        fail(str(exc))
    _connections_or_exit(settings, redis=True)
    try:
        asyncio.run(run_worker(supervisor))
    except RegistryError as exc:
        fail(str(exc))


def _port_free_or_exit(host: str, port: int) -> None:
    """One line instead of uvicorn's bind error after the whole stack has started (the port
    could still be taken in between; uvicorn then reports it as before)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(f"cannot listen on {host}:{port} ({exc.strerror or exc}): stop what holds it "
                 "(another dodo-worker?) or choose another port with --port or PORT")


def _redis_url_or_exit(settings: Settings) -> str:
    if not settings.REDIS_URL:
        fail("REDIS_URL is not set (use `dodo-worker dev` for an embedded Redis)")
    return settings.REDIS_URL


def _connections_or_exit(settings: Settings, *, redis: bool) -> None:
    """One line and exit 2 when the database (or Redis) does not answer or has no tables."""
    run(check_connections(settings, redis=redis), check_database=False)


def _warn_without_redis(redis_url: str) -> None:
    """`web` starts without Redis (it stores webhooks, the sweeper queues them later), but not
    with a REDIS_URL that is not one."""
    try:
        asyncio.run(check_redis(redis_url))
    except BadRedisURL as exc:
        fail(str(exc))
    except RedisUnavailable as exc:
        log.warning("%s; webhooks are stored meanwhile and queued once it answers", exc)


def _check_or_exit(settings: Settings) -> None:
    from worker.resources import check_config

    try:
        check_config(settings)
    except ConfigError as exc:
        fail(f"configuration error: {exc}")


def _dev_secret() -> str:
    """A test secret for local use, written to .env so `send` in another shell finds it."""
    secret = generate_secret()
    env = Path(".env")
    lines = env.read_text().splitlines() if env.exists() else []
    lines.append(f"DODO_PAYMENTS_WEBHOOK_KEY={secret}")
    env.write_text("\n".join(lines) + "\n")
    return secret


def dev_command(
    port: int | None = typer.Option(None, "--port", help="Port (PORT, 8000)."),
) -> None:
    """Receiver and worker in one process, with an embedded Redis and SQLite when none is set."""
    settings = settings_or_exit()
    configure_logging(settings.LOG_LEVEL)
    port = port or settings.PORT
    _port_free_or_exit("127.0.0.1", port)
    if not settings.webhook_secrets:
        secret = _dev_secret()
        settings = settings_or_exit(DODO_PAYMENTS_WEBHOOK_KEY=secret)
        console.print(f"generated a test webhook secret and saved it in .env:\n  {secret}")
    _check_or_exit(settings)
    upgrade_or_exit(settings)
    with _exit_on_sigterm():  # until uvicorn takes the signals, and after: still clean up
        embedded = _dev_redis(settings)
        try:
            asyncio.run(_dev(settings, port))
        except RegistryError as exc:
            fail(str(exc))
        finally:
            if embedded is not None:
                DEV_REDIS_FILE.unlink(missing_ok=True)
                embedded.close()


def _dev_redis(settings: Settings) -> EmbeddedRedis | None:
    """The embedded Redis `dev` starts when REDIS_URL is not set (None: the one set answers)."""
    if settings.REDIS_URL and _reachable_dev_redis(settings):
        run(check_redis(settings.REDIS_URL), check_database=False)
        return None
    embedded = EmbeddedRedis().start()
    settings.REDIS_URL = embedded.url
    DEV_STATE_DIR.mkdir(exist_ok=True)
    DEV_REDIS_FILE.write_text(embedded.url)
    console.print(f"started an embedded Redis at {embedded.url}")
    return embedded


@contextlib.contextmanager
def _exit_on_sigterm() -> Generator[None, None, None]:
    """SIGTERM as SystemExit (like Ctrl-C's KeyboardInterrupt), so `finally` blocks run."""

    def _exit(_signum: int, _frame: object) -> None:
        raise SystemExit(0)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _reachable_dev_redis(settings: Settings) -> bool:
    """A REDIS_URL taken from a stale .dev/redis-url (no dev running) is not to be used."""
    import os
    from urllib.parse import urlparse

    if "REDIS_URL" in os.environ or not DEV_REDIS_FILE.exists():
        return True
    parsed = urlparse(settings.REDIS_URL or "")
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 6379), 0.3).close()
        return True
    except OSError:
        return False


async def _dev(settings: Settings, port: int) -> None:
    supervisor = WorkerSupervisor(settings)
    server = _server(settings, "127.0.0.1", port)
    console.print(
        f"dodo-worker dev: webhook URL http://127.0.0.1:{port}/webhooks/dodo\n"
        f"  try it:  dodo-worker send payment.succeeded   then   dodo-worker events list",
        highlight=False,
    )
    worker_task = asyncio.create_task(supervisor.run())
    try:
        await server.serve()  # uvicorn handles Ctrl-C / SIGTERM; then the worker stops gracefully
    finally:
        supervisor.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await worker_task
