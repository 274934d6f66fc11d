"""What a web or worker process holds for its lifetime: settings, SQL, Redis, metrics, handlers."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from worker import queue
from worker.coalesce import Coalescer
from worker.metrics import SharedMetrics
from worker.registry import Registry, default_registry
from worker.settings import Settings
from worker.store import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: ArqRedis
    metrics: SharedMetrics
    registry: Registry
    resources: dict[str, Any] = field(default_factory=dict)
    coalescers: dict[str, Coalescer[Any, Any]] = field(default_factory=dict)  # worker/dispatch.py
    # The events this process has claimed and not settled yet, with their lease token (worker/dispatch.py).
    leases: dict[str, str] = field(default_factory=dict)
    stopping: bool = False  # set by `stop_gracefully` as the grace period ends: cut jobs give leases back
    releasing: asyncio.Task[None] | None = None  # worker/dispatch.py `release_leases`, once
    heartbeat: asyncio.Future[None] | None = None  # worker/leases.py, while a worker runs

    @classmethod
    def create(cls, settings: Settings, registry: Registry | None = None) -> Runtime:
        if not settings.REDIS_URL:
            raise RuntimeError("REDIS_URL is not set (dodo-worker dev starts an embedded Redis)")
        redis = queue.connect(settings.REDIS_URL)
        return cls(
            settings=settings,
            db=Database(settings.DATABASE_URL),
            redis=redis,
            metrics=SharedMetrics(redis, key=f"{settings.QUEUE_NAME}:metrics"),
            registry=registry if registry is not None else default_registry,
        )

    async def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat.cancel()
        for coalescer in self.coalescers.values():
            await coalescer.close()
        with contextlib.suppress(Exception):
            await self.metrics.stop()
        for resource in self.resources.values():
            closer = getattr(resource, "aclose", None) or getattr(resource, "close", None)
            if closer is not None:
                with contextlib.suppress(Exception):
                    result = closer()
                    if hasattr(result, "__await__"):
                        await result
        await self.db.dispose()
        with contextlib.suppress(Exception):
            await self.redis.aclose(close_connection_pool=True)


REDIS_CHECK_SECONDS = 3.0


class RedisUnavailable(Exception):
    """Redis cannot serve a process or a command; the message is one line that names the fix."""


class BadRedisURL(RedisUnavailable):
    """REDIS_URL is not a Redis URL at all."""


def redis_display_url(url: str) -> str:
    """redis://host:port/db: user, password and options are never printed."""
    try:
        parts = urlsplit(url)
        host = f"{parts.hostname}:{parts.port or 6379}" if parts.hostname else ""
    except ValueError:
        return "(not a URL)"
    return f"{parts.scheme}://{host}{parts.path}"


def redis_problem(url: str, exc: BaseException) -> RedisUnavailable:
    reason = str(exc).strip().splitlines()[0].rstrip(".") if str(exc).strip() else "no answer"
    return RedisUnavailable(f"cannot reach Redis at {redis_display_url(url)}: {type(exc).__name__}: {reason}")


async def check_redis(url: str) -> None:
    """Raise RedisUnavailable (one line) unless REDIS_URL is a Redis URL and Redis answers a PING."""
    try:
        queue.redis_settings(url)  # arq's parser, stricter than redis-py's
        redis = queue.connect(url)
    except (ValueError, RuntimeError) as exc:
        raise BadRedisURL(f"REDIS_URL is not a Redis URL ({exc}): "
                               "use redis://host:6379/0 or rediss://host:6380/0") from None
    try:
        await asyncio.wait_for(redis.ping(), REDIS_CHECK_SECONDS)
    except (RedisError, OSError, TimeoutError) as exc:
        raise redis_problem(url, exc) from None
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose(close_connection_pool=True)


async def check_connections(settings: Settings, *, redis: bool = True) -> None:
    """What `web`, `worker` and the CLI check before they start: the database answers and has
    its tables (StoreUnavailable), and Redis answers (RedisUnavailable); one line each."""
    from worker.store.migrate import check_schema

    await check_schema(settings.DATABASE_URL)
    if redis and settings.REDIS_URL:
        await check_redis(settings.REDIS_URL)


def connection_problem(settings: Settings, exc: BaseException) -> Exception | None:
    """The one-line problem (StoreUnavailable, RedisUnavailable) a failure stands for when the
    database or Redis was unreachable or the tables were missing; None for any other failure."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from worker.store.database import StoreUnavailable, store_problem

    if isinstance(exc, StoreUnavailable | RedisUnavailable):
        return exc
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        return redis_problem(settings.REDIS_URL or "", exc)
    return store_problem(settings.DATABASE_URL, exc)
