"""Incident state in Redis, shared by every web and worker process.

Why Redis and not the database: web and worker processes (on several machines) share it already,
a Lua script makes "open unless open, and say whether we did" one atomic step (two processes
never both send), keys expire by themselves, and no migration is needed. Losing Redis's data
costs at worst one repeated message.

Each open incident is a hash `<QUEUE_NAME>:alerts:incident:<id>` (kind, subject, opened_at,
seen) that expires after ALERT_REPEAT_HOURS (a condition still there later is told again at its
next occurrence), listed in the set `<QUEUE_NAME>:alerts:open` for the resolution check. `seen`
counts occurrences: a close that read `seen` before checking the database only succeeds if no
occurrence came in meanwhile, so a new dead event racing the check keeps its incident open.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from worker.windows import FixedWindows

_OPEN = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'seen', 1)
  return 0
end
redis.call('HSET', KEYS[1], 'kind', ARGV[1], 'subject', ARGV[2], 'opened_at', ARGV[3], 'seen', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('SADD', KEYS[2], ARGV[5])
return 1
"""
_CLOSE = """
if ARGV[1] ~= '' and redis.call('HGET', KEYS[1], 'seen') ~= ARGV[1] then return 0 end
redis.call('SREM', KEYS[2], ARGV[2])
return redis.call('DEL', KEYS[1])
"""


@dataclass(frozen=True)
class Incident:
    id: str
    kind: str
    subject: str
    seen: str  # as Redis holds it, for a conditional close


def incident_id(kind: str, subject: str = "") -> str:
    return f"{kind}:{hashlib.sha256(subject.encode()).hexdigest()[:16]}" if subject else kind


class Incidents:
    def __init__(self, redis: Redis, queue_name: str, ttl_seconds: int) -> None:
        self.redis, self.ttl = redis, max(1, ttl_seconds)
        self.prefix = f"{queue_name}:alerts"

    def _key(self, ident: str) -> str:
        return f"{self.prefix}:incident:{ident}"

    @property
    def open_set(self) -> str:
        return f"{self.prefix}:open"

    async def open(self, kind: str, subject: str = "") -> bool:
        """Open the incident; True only for the one caller that opened it (that one alerts)."""
        ident = incident_id(kind, subject)
        opened = await self.redis.eval(_OPEN, 2, self._key(ident), self.open_set, kind, subject,  # type: ignore[misc]
                                       str(int(time.time())), str(self.ttl), ident)
        return bool(opened)

    async def close(self, ident: str, seen: str = "") -> bool:
        """Close silently; with `seen`, only if nothing happened since it was read. True if closed."""
        closed = await self.redis.eval(_CLOSE, 2, self._key(ident), self.open_set, seen, ident)  # type: ignore[misc]
        return bool(closed)

    async def all_open(self) -> list[Incident]:
        """The open incidents (forgetting those whose record expired)."""
        members: set[bytes] = await self.redis.smembers(self.open_set)  # type: ignore[misc]
        found = []
        for raw in sorted(members):
            ident = raw.decode()
            record: dict[bytes, bytes] = await self.redis.hgetall(self._key(ident))  # type: ignore[misc]
            if not record:
                await self.redis.srem(self.open_set, ident)  # type: ignore[misc]
                continue
            found.append(Incident(ident, record[b"kind"].decode(), record.get(b"subject", b"").decode(),
                                  record.get(b"seen", b"").decode()))
        return found


class RejectionWindow:
    """Bad-signature refusals per ALERT_REJECTIONS_WINDOW_SECONDS, across web processes: two
    fixed-window counters, the previous one weighted by how much of it still overlaps the sliding
    window (a burst across a window's edge still counts whole)."""

    def __init__(self, redis: Redis, queue_name: str, window_seconds: int) -> None:
        self.window = window_seconds
        self.counts = FixedWindows(redis, f"{queue_name}:alerts:rejections", window_seconds, 2 * window_seconds + 5)

    async def add(self, count: int, now: float | None = None) -> float:
        now = time.time() if now is None else now
        current, previous = await self.counts.add(count, now)
        return _estimate(current, previous, now, self.window)

    async def rate(self, now: float | None = None) -> float:
        now = time.time() if now is None else now
        previous, current = await self.counts.last(2, now)
        return _estimate(current, previous, now, self.window)


def _estimate(current: int, previous: int, now: float, window: int) -> float:
    elapsed = (now % window) / window
    return previous * (1.0 - elapsed) + current
