"""The arq side: job functions, cron jobs and the worker's settings, like arq's own WorkerSettings."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta
from typing import Any

from arq import Retry
from arq.cron import cron
from arq.worker import Worker, func

from worker import leases, queue
from worker.dispatch import events_with_plain_handlers, process_events
from worker.logs import quiet_cron_jobs
from worker.registry import Registry, load_handler_modules
from worker.resources import extra_cron_jobs, extra_functions, open_resources
from worker.runtime import Runtime
from worker.settings import Settings
from worker.sweeper import sweep

log = logging.getLogger("dodo_worker.worker")

# Our own attempt counting (MAX_ATTEMPTS, per handler, in SQL) decides when an event is dead;
# arq's counter only guards against a job that keeps killing its worker before it starts.
ARQ_MAX_TRIES = 10_000
SWEEP_SECONDS = set(range(0, 60, 10))


async def process_event_job(ctx: dict[str, Any], event_id: str) -> str:
    """One event (the sweeper's, `events replay`'s and retries' job); a retry re-runs this job."""
    runtime: Runtime = ctx["runtime"]
    [outcome] = await process_events(runtime, [event_id])
    if isinstance(outcome, BaseException):
        raise outcome
    if outcome.status == "retry" and outcome.retry_in is not None:
        raise Retry(defer=timedelta(seconds=outcome.retry_in))
    return outcome.status


async def process_events_job(ctx: dict[str, Any], event_ids: list[str]) -> str:
    """Several events (the receiver's and reconciliation's job). Those that a handler without
    `batched` will run for get a job each; one that must be retried gets a deferred job of its
    own; one whose processing crashed (the database went away) is left to the sweeper, like an
    event whose job failed."""
    runtime: Runtime = ctx["runtime"]
    counts: Counter[str] = Counter()
    plain = await events_with_plain_handlers(runtime, list(event_ids))
    if plain:  # if Redis fails here they stay `received`, and the sweeper queues them
        if await queue.enqueue_each(runtime.redis, runtime.settings.QUEUE_NAME, plain):
            counts["queued one by one"] = len(plain)
        one_by_one = set(plain)
        event_ids = [event_id for event_id in event_ids if event_id not in one_by_one]
    outcomes = await process_events(runtime, list(event_ids))
    for event_id, outcome in zip(event_ids, outcomes, strict=True):
        if isinstance(outcome, BaseException):
            counts["crashed"] += 1
            log.warning("event %s: %s; the sweeper will queue it again", event_id, type(outcome).__name__)
            continue
        counts[outcome.status] += 1
        if outcome.status == "retry" and outcome.retry_in is not None:
            await queue.enqueue_retry(runtime.redis, runtime.settings.QUEUE_NAME, event_id, outcome.retry_in)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


async def sweep_job(ctx: dict[str, Any]) -> int:
    return await sweep(ctx["runtime"])


def make_startup(settings: Settings, registry: Registry | None, runtime: Runtime | None = None) -> Any:
    async def startup(ctx: dict[str, Any]) -> None:
        rt = runtime or Runtime.create(settings, registry)
        ctx["runtime"] = rt
        rt.stopping, rt.releasing = False, None  # a runtime passed in may have served a worker that stopped
        rt.metrics.start()
        await open_resources(rt)
        swept = await sweep(rt, older_than=0)
        leases.start(rt)
        log.info("worker ready: %d handler(s), queue %r, %d event(s) swept at start",
                 len(rt.registry), settings.QUEUE_NAME, swept)
        if not len(rt.registry):
            log.warning("no handlers registered: events are stored and marked ignored. Add a catalog "
                        "(entitlements.toml or ENTITLEMENTS_FILE) or list your modules in HANDLER_MODULES")

    return startup


def make_shutdown(owns_runtime: bool) -> Any:
    async def shutdown(ctx: dict[str, Any]) -> None:
        runtime: Runtime | None = ctx.get("runtime")
        if runtime is not None:
            await leases.stop(runtime)
        if runtime is not None and owns_runtime:
            await runtime.close()
        elif runtime is not None:
            await runtime.metrics.flush()

    return shutdown


def cron_jobs(settings: Settings) -> list[Any]:
    return [cron(sweep_job, name=f"{settings.QUEUE_NAME}:sweep", second=SWEEP_SECONDS, run_at_startup=False,
                 unique=True), *extra_cron_jobs(settings)]


def build_worker(
    settings: Settings,
    registry: Registry | None = None,
    *,
    runtime: Runtime | None = None,
    load_modules: bool = True,
    **overrides: Any,
) -> Worker:
    """The arq Worker of the `worker` process (tests build it the same way, in-process)."""
    if load_modules:
        load_handler_modules(settings.handler_modules)
    if not settings.REDIS_URL:
        raise RuntimeError("REDIS_URL is not set")
    options: dict[str, Any] = {
        "functions": [func(process_event_job, name=queue.PROCESS_EVENT),
                      func(process_events_job, name=queue.PROCESS_EVENTS), *extra_functions(settings)],
        "cron_jobs": cron_jobs(settings),
        "on_startup": make_startup(settings, registry, runtime),
        "on_shutdown": make_shutdown(owns_runtime=runtime is None),
        "redis_settings": queue.redis_settings(settings.REDIS_URL),
        "queue_name": settings.QUEUE_NAME,
        "max_jobs": settings.WORKER_CONCURRENCY,
        "poll_delay": settings.WORKER_POLL_SECONDS,
        "job_timeout": settings.JOB_TIMEOUT_SECONDS,
        "max_tries": ARQ_MAX_TRIES,
        "keep_result": 0,
        "job_completion_wait": settings.SHUTDOWN_GRACE_SECONDS,
        "health_check_key": f"{settings.QUEUE_NAME}:health-check",
        **queue.SERIALIZERS,
    }
    options.update(overrides)
    quiet_cron_jobs([job.name for job in options["cron_jobs"]])
    return Worker(**options)


async def stop_gracefully(worker: Worker, grace_seconds: float) -> None:
    """Stop picking jobs, let running ones finish (up to the grace period), then close.

    What the grace period cuts short is cancelled; arq puts it back on the queue and the
    handlers whose success was not yet recorded run again (they are idempotent)."""
    import asyncio
    import contextlib

    worker.allow_pick_jobs = False
    running = [task for task in worker.tasks.values() if not task.done()]
    if running:
        await asyncio.wait(running, timeout=grace_seconds)
    runtime = worker.ctx.get("runtime")
    if runtime is not None:  # from here on, what is cut gives its events' leases back
        runtime.stopping = True
    from redis.exceptions import RedisError

    with contextlib.suppress(asyncio.CancelledError, RedisError, OSError):
        await worker.close()
