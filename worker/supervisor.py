"""Keep an arq worker running: rebuild it after Redis or the database drops, stop it gracefully
on a signal.

arq's `Worker` exits when its Redis connection fails mid-poll (and a fresh one when its start-up,
which reads SQL, fails). A merchant's worker should ride out a Redis or database restart without
a process manager noticing, so we run it in a loop: on a lost connection, log which one was lost,
wait (with back-off) and start a fresh Worker on the same settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import Any

from arq.worker import Worker
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from worker.jobs import build_worker, stop_gracefully
from worker.registry import Registry, load_handler_modules
from worker.runtime import connection_problem, redis_display_url
from worker.settings import Settings
from worker.store.database import StoreUnavailable
from worker.store.migrate import check_schema

log = logging.getLogger("dodo_worker.supervisor")
RESTART_DELAYS = (0.5, 1, 2, 5, 10)


class WorkerSupervisor:
    def __init__(self, settings: Settings, registry: Registry | None = None, *, load_modules: bool = True,
                 **worker_options: Any) -> None:
        if load_modules:
            load_handler_modules(settings.handler_modules)
        self.settings = settings
        self.registry = registry
        self.worker_options = worker_options
        self.current: Worker | None = None
        self.restarts = 0
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            self.current = build_worker(self.settings, self.registry, load_modules=False,
                                        handle_signals=False, **self.worker_options)
            task = asyncio.create_task(self.current.async_run())
            stop_wait = asyncio.create_task(self._stopping.wait())
            await asyncio.wait({task, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            stop_wait.cancel()
            if self._stopping.is_set():
                await stop_gracefully(self.current, self.settings.SHUTDOWN_GRACE_SECONDS)
                _quiet_about_cut_redis_commands()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                break
            error = task.exception() if not task.cancelled() else None
            # Let running handlers finish: they need SQL, not Redis, and a job cut short here
            # would wait for arq to run its job again (or, if Redis lost it, for the sweeper).
            with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
                await stop_gracefully(self.current, self.settings.SHUTDOWN_GRACE_SECONDS)
            if error is not None and not _lost_connection(self.settings, error):
                raise error
            delay = RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)]
            failures += 1
            self.restarts += 1
            log.error("%s; starting the worker again in %ss", await self._what_was_lost(error), delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _what_was_lost(self, error: BaseException | None) -> str:
        """Which of Redis and the database went away. A bare OSError or timeout could be either
        (arq's Redis or asyncpg), so then the database is asked."""
        if not isinstance(error, RedisError):
            problem = connection_problem(self.settings, error) if isinstance(error, SQLAlchemyError) else None
            if problem is None:
                try:
                    await check_schema(self.settings.DATABASE_URL)
                except StoreUnavailable as exc:
                    problem = exc
            if problem is not None:
                return f"lost the database: {problem}"
        where = redis_display_url(self.settings.REDIS_URL or "")
        return f"lost Redis at {where} ({type(error).__name__})"

    def request_stop(self) -> None:
        self._stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("%s: finishing running jobs (up to %ss), then stopping", sig.name,
                 self.settings.SHUTDOWN_GRACE_SECONDS)
        self.request_stop()


def _quiet_about_cut_redis_commands() -> None:
    """Cancelling arq at a stop can cut a Redis pipeline short (arq checks whether a job runs
    elsewhere in one); redis-py then closes its connection when the pipeline is collected and
    reports "Unclosed Pipeline client" through the loop as an ERROR. Nothing is lost (the job was
    not started), so after a stop such reports are logged at DEBUG; any other goes on as before."""
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if message.startswith("Unclosed ") and message.endswith(" client") and "exception" not in context:
            log.debug("after the stop: %s (a Redis command cut short; its connection is closed)", message)
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handle)


def _lost_connection(settings: Settings, error: BaseException) -> bool:
    """Redis or the database went away (worth starting again), rather than a bug."""
    return isinstance(error, RedisError | OSError | TimeoutError) or connection_problem(settings, error) is not None


async def run_worker(supervisor: WorkerSupervisor) -> None:
    """The `worker` process: the supervisor, stopped gracefully by SIGINT or SIGTERM."""
    supervisor.install_signal_handlers()
    await supervisor.run()
