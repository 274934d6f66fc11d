"""The arq queue: connection settings, the pool, and putting events on it."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job as arq_serialize_job
from arq.utils import timestamp_ms
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


def serialize_job(data: Any) -> bytes:
    """arq's jobs and results as JSON, not arq's default pickle: unpickling what is in Redis would
    let anyone who can write to Redis run code in the workers. Our jobs carry an event id only;
    a result that is not JSON (an exception) is stored as its text."""
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def deserialize_job(raw: bytes) -> Any:
    return json.loads(raw)


SERIALIZERS: dict[str, Any] = {"job_serializer": serialize_job, "job_deserializer": deserialize_job}


def connect(url: str) -> ArqRedis:
    """A lazily connecting pool: creating it never fails, so a web process starts without Redis."""
    pool = ConnectionPool.from_url(
        url, socket_connect_timeout=1.0, socket_timeout=2.0, health_check_interval=15
    )
    return ArqRedis(connection_pool=pool, **SERIALIZERS)


def job_id(queue_name: str, event_id: str) -> str:
    """arq's job id for an event. arq names its job, in-progress and retry keys by job id alone,
    whatever the queue, so the queue name is part of it: two stacks sharing a Redis (staging and
    production, or tests beside `dev`) never take each other's event for already queued."""
    return f"{queue_name}:{event_id}"


async def enqueue_event(redis: ArqRedis, queue_name: str, event_id: str) -> bool:
    """Queue one event, keyed by its id so it is never queued twice at once.

    True when the queue has it (newly or already); False when Redis could not be reached."""
    try:
        await asyncio.wait_for(
            redis.enqueue_job(PROCESS_EVENT, event_id, _job_id=job_id(queue_name, event_id), _queue_name=queue_name),
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


# arq has no bulk enqueue. This is its `enqueue_job` for many jobs in one round trip: the same
# serializer, key names, score and expiry, and the same rule (skip a job id that is queued,
# running or has a result), made atomic by running it as one script instead of WATCH/MULTI.
# tests/test_queue.py checks that arq's own worker runs jobs enqueued this way.
_ENQUEUE_SCRIPT = """
local added = 0
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('EXISTS', ARGV[1] .. id, ARGV[2] .. id) == 0 then
    redis.call('PSETEX', ARGV[1] .. id, ARGV[3], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[4], id)
    added = added + 1
  end
end
return added
"""


async def enqueue_events(redis: ArqRedis, queue_name: str, event_ids: list[str]) -> bool:
    """Queue many events in one round trip; False when Redis could not be reached."""
    if not event_ids:
        return True
    now = timestamp_ms()
    argv: list[str | bytes] = [job_key_prefix, result_key_prefix, str(redis.expires_extra_ms), str(now)]
    for event_id in event_ids:
        argv += [job_id(queue_name, event_id), arq_serialize_job(PROCESS_EVENT, (event_id,), {}, None, now,
                                         serializer=redis.job_serializer)]
    try:
        await asyncio.wait_for(
            redis.eval(_ENQUEUE_SCRIPT, 1, queue_name, *argv),  # type: ignore[arg-type]
            ENQUEUE_TIMEOUT_SECONDS,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not enqueue %d event(s): %s", len(event_ids), type(exc).__name__)
        return False
    return True
