"""The arq queue: connection settings, the pool, and putting events on it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from arq.connections import ArqRedis, RedisSettings
from redis.asyncio import ConnectionPool
from redis.exceptions import RedisError

PROCESS_EVENT = "process_event"
ENQUEUE_TIMEOUT_SECONDS = 2.0

log = logging.getLogger("dodo_worker.queue")


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 3
    settings.conn_retry_delay = 1
    return settings


def connect(url: str) -> ArqRedis:
    """A lazily connecting pool: creating it never fails, so a web process starts without Redis."""
    pool = ConnectionPool.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=15
    )
    return ArqRedis(connection_pool=pool)


async def enqueue_event(redis: ArqRedis, queue_name: str, event_id: str) -> bool:
    """Queue one event, keyed by its id so it is never queued twice at once.

    True when the queue has it (newly or already); False when Redis could not be reached."""
    try:
        await asyncio.wait_for(
            redis.enqueue_job(PROCESS_EVENT, event_id, _job_id=event_id, _queue_name=queue_name),
            ENQUEUE_TIMEOUT_SECONDS,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not enqueue event %s: %s", event_id, type(exc).__name__)
        return False
    return True


async def enqueue_many(redis: ArqRedis, queue_name: str, event_ids: Iterable[str]) -> list[str]:
    """Queue several events; returns the ids the queue now holds."""
    done = []
    for event_id in event_ids:
        if not await enqueue_event(redis, queue_name, event_id):
            break  # Redis is down: the rest would fail the same way
        done.append(event_id)
    return done
