"""Counts per fixed time window in Redis, shared by every process: one key per window
(`<prefix>:<window index>`), incremented atomically and expiring by itself.

Used for refused webhooks: per ALERT_REJECTIONS_WINDOW_SECONDS for the signature alert
(worker/alerts/incidents.py) and per hour for the console's overview chart."""

from __future__ import annotations

import time

from redis.asyncio import Redis

HOUR = 3600
HOURS_KEPT = 26  # the overview shows 24; an hour's key outlives its last day on the chart


class FixedWindows:
    def __init__(self, redis: Redis, prefix: str, window_seconds: int, keep_seconds: int) -> None:
        self.redis, self.prefix, self.window, self.keep = redis, prefix, window_seconds, keep_seconds

    def index(self, now: float) -> int:
        return int(now // self.window)

    async def add(self, count: int, now: float | None = None) -> tuple[int, int]:
        """Add `count` to the window of `now`; (that window's count, the previous window's)."""
        index = self.index(time.time() if now is None else now)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.incrby(f"{self.prefix}:{index}", count)
            pipe.expire(f"{self.prefix}:{index}", self.keep)
            pipe.get(f"{self.prefix}:{index - 1}")
            current, _, previous = await pipe.execute()
        return int(current), int(previous or 0)

    async def last(self, windows: int, now: float | None = None) -> list[int]:
        """The counts of the last `windows` windows, oldest first, the one of `now` last."""
        index = self.index(time.time() if now is None else now)
        values = await self.redis.mget([f"{self.prefix}:{i}" for i in range(index - windows + 1, index + 1)])
        return [int(value or 0) for value in values]


def rejected_per_hour(redis: Redis, queue_name: str) -> FixedWindows:
    """Webhooks the receiver refused, whatever the reason, per hour (UTC hours: 3600 s windows)."""
    return FixedWindows(redis, f"{queue_name}:webhooks:rejected:hour", HOUR, HOURS_KEPT * HOUR)
