"""The arq queue: connection settings, the pool, and putting events on it."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from dataclasses import dataclass
from typing import Any

from arq.connections import ArqRedis, RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job as arq_serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import RedisError

PROCESS_EVENT = "process_event"  # one event: the sweeper, `events replay` and retries
PROCESS_EVENTS = "process_events"  # several: what the receiver and reconciliation enqueue
# Events per `process_events` job. A job's events share the worker's batches, so one arq job
# (six Redis round trips) serves many events. Smaller than a batch (WORKER_BATCH_SIZE, 100): the
# worker's batches take events from several jobs, and several workers share a burst's jobs.
EVENTS_PER_JOB = 50
SCRIPT_JOBS = 1000  # jobs per enqueue script
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
    let anyone who can write to Redis run code in the workers. Our jobs carry event ids only;
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


async def enqueue_retry(redis: ArqRedis, queue_name: str, event_id: str, delay: float) -> bool:
    """Queue one event to run again after `delay` seconds (a handler failed in a job of several).
    False when Redis could not be reached or a job for it is already queued or running; the
    sweeper then takes it up when its retry is due."""
    try:
        job = await asyncio.wait_for(
            redis.enqueue_job(PROCESS_EVENT, event_id, _job_id=job_id(queue_name, event_id),
                              _queue_name=queue_name, _defer_by=delay),
            ENQUEUE_TIMEOUT_SECONDS,
        )
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("could not enqueue the retry of event %s: %s", event_id, type(exc).__name__)
        return False
    return job is not None


# arq has no bulk enqueue. This is its `enqueue_job` for many jobs in one round trip: the same
# serializer, key names, score and expiry, and the same rule (skip a job id that is queued,
# running or has a result), made atomic by running it as one script instead of WATCH/MULTI.
# tests/test_queue.py checks that arq's own worker runs jobs enqueued this way.
# The sweeper's call (ARGV[6] >= 0) also takes over an event whose own job arq holds in progress
# since more than ARGV[6] ms although the event is not claimed (it is swept as `queued` or
# `received`): the worker that started the job died (or hangs) between arq's start and the
# claim, and arq would refuse the job id until its in-progress key expires, the job timeout plus
# 10 s later. Such an event is queued again as `<job id>:unclaimed` (once: while that job waits,
# sweeping again adds nothing). Two jobs on one event are safe: claims are exclusive.
_ENQUEUE_SCRIPT = """
local added = 0
local started_long_ago = tonumber(ARGV[6])
for i = 7, #ARGV, 2 do
  local id = ARGV[i]
  if started_long_ago >= 0 and redis.call('EXISTS', ARGV[1] .. id, ARGV[2] .. id) ~= 0 then
    local left = redis.call('PTTL', ARGV[5] .. id)
    if left > 0 and left <= started_long_ago then
      id = id .. ':unclaimed'
    end
  end
  if redis.call('EXISTS', ARGV[1] .. id, ARGV[2] .. id) == 0 then
    redis.call('PSETEX', ARGV[1] .. id, ARGV[3], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[4], id)
    added = added + 1
  end
end
return added
"""


async def enqueue_events(redis: ArqRedis, queue_name: str, event_ids: list[str]) -> bool:
    """Queue new events in one round trip, up to `EVENTS_PER_JOB` per job; False when Redis could
    not be reached.

    A job of several events has a fresh id, so arq does not keep an event from being queued twice
    (the sweeper may queue it again on its own); the claim's lease in SQL does
    (worker/dispatch.py), and a second job that finds the event taken or done skips it."""
    jobs = [(f"{queue_name}:events:{uuid.uuid4().hex}", PROCESS_EVENTS, (event_ids[start:start + EVENTS_PER_JOB],))
            for start in range(0, len(event_ids), EVENTS_PER_JOB)]
    return await _enqueue_jobs(redis, queue_name, jobs, len(event_ids))


async def enqueue_each(redis: ArqRedis, queue_name: str, event_ids: list[str]) -> bool:
    """Queue events in one round trip, one job each, keyed by the event's id: what the sweeper
    and `events replay` use, so that queueing the same events again (every sweep) adds nothing
    while their jobs wait. False when Redis could not be reached."""
    jobs = [(job_id(queue_name, event_id), PROCESS_EVENT, (event_id,)) for event_id in event_ids]
    return await _enqueue_jobs(redis, queue_name, jobs, len(event_ids))


async def enqueue_sweep(redis: ArqRedis, queue_name: str, event_ids: list[str], *, job_timeout_seconds: float,
                        unclaimed_after_seconds: float) -> bool:
    """`enqueue_each` for the sweeper, which also takes over an event whose job a dead worker
    started but never claimed (see `_ENQUEUE_SCRIPT`). arq's in-progress key lasts the job timeout
    plus 10 s from the job's start, so what is left of it says when the job started."""
    in_progress_ms = (job_timeout_seconds + 10) * 1000
    started_long_ago = max(0, int(in_progress_ms - unclaimed_after_seconds * 1000))
    jobs = [(job_id(queue_name, event_id), PROCESS_EVENT, (event_id,)) for event_id in event_ids]
    return await _enqueue_jobs(redis, queue_name, jobs, len(event_ids), started_long_ago_ms=started_long_ago)


async def enqueue_takeovers(redis: ArqRedis, queue_name: str, expired: list[tuple[str, int]]) -> bool:
    """Queue events whose lease ran out, one job each. The job id names the lost claim (the
    event's attempts): the dead worker's own job for the event may still sit in Redis, in
    progress, until arq gives up on it (JOB_TIMEOUT_SECONDS later), and would make the event's
    plain job id refused; queueing again while this one waits adds nothing."""
    jobs = [(f"{job_id(queue_name, event_id)}:lease{attempts}", PROCESS_EVENT, (event_id,))
            for event_id, attempts in expired]
    return await _enqueue_jobs(redis, queue_name, jobs, len(expired))


async def _enqueue_jobs(redis: ArqRedis, queue_name: str, jobs: list[tuple[str, str, tuple[Any, ...]]],
                        events: int, *, started_long_ago_ms: int = -1) -> bool:
    now = timestamp_ms()
    for start in range(0, len(jobs), SCRIPT_JOBS):  # Redis runs nothing else while a script runs
        argv: list[str | bytes] = [job_key_prefix, result_key_prefix, str(redis.expires_extra_ms), str(now),
                                   in_progress_key_prefix, str(started_long_ago_ms)]
        for arq_job_id, function, args in jobs[start:start + SCRIPT_JOBS]:
            argv += [arq_job_id, arq_serialize_job(function, args, {}, None, now, serializer=redis.job_serializer)]
        try:
            await asyncio.wait_for(
                redis.eval(_ENQUEUE_SCRIPT, 1, queue_name, *argv),  # type: ignore[arg-type]
                ENQUEUE_TIMEOUT_SECONDS,
            )
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("could not enqueue %d event(s): %s", events, type(exc).__name__)
            return False
    return True


# The queue as the console shows it. arq keeps every job in the queue's sorted set, scored by
# when it may run, from enqueue until it finishes: a running job (arq's in-progress key is set)
# and one deferred (a retry, the next cron run) are in it too. So ZCARD (/metrics'
# `dodo_queue_depth`) is split here into waiting (due, not started), running and scheduled, and
# the oldest waiting age is taken from the same jobs: how long the longest-due waiting job is due.
# Running jobs are looked for among the first STATE_SCAN due jobs (arq starts the lowest scores).
STATE_SCAN = 1000
_STATE_SCRIPT = """
local now = tonumber(ARGV[1])
local total = redis.call('ZCARD', KEYS[1])
local due = redis.call('ZCOUNT', KEYS[1], '-inf', now)
local running, oldest = 0, ''
local jobs = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[3]))
for i = 1, #jobs, 2 do
  if redis.call('EXISTS', ARGV[2] .. jobs[i]) == 1 then
    running = running + 1
  elseif oldest == '' then
    oldest = jobs[i + 1]
  end
end
return {total, due, running, oldest}
"""


@dataclass(frozen=True)
class QueueState:
    waiting: int  # due and not started
    running: int
    scheduled: int  # to run later: retries' back-off, cron jobs' next run
    oldest_waiting_seconds: float | None  # None: none waiting

    @property
    def depth(self) -> int:
        """Every job in the queue, as `dodo_queue_depth` counts them."""
        return self.waiting + self.running + self.scheduled


async def queue_state(redis: Redis, queue_name: str) -> QueueState:
    now = timestamp_ms()
    total, due, running, oldest = await redis.eval(  # type: ignore[misc]
        _STATE_SCRIPT, 1, queue_name, str(now), in_progress_key_prefix, str(STATE_SCAN))
    oldest_text = oldest.decode() if isinstance(oldest, bytes) else str(oldest)
    waiting = max(0, int(due) - int(running))
    age = max(0.0, (now - float(oldest_text)) / 1000) if oldest_text and waiting else None
    return QueueState(waiting, int(running), int(total) - int(due), age)
