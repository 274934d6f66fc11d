"""Requests a minute per client and per licence key, shared by every web process through Redis.

A sliding-window counter: one Redis counter per identity per minute, and the request is allowed
while `previous minute's count * the part of it still inside the last 60 s + this minute's
count` stays under the limit. It needs two small keys per identity (which expire after two
minutes), one round trip (a Lua script: read, decide and count atomically) and no clock but the
callers'. A refused request is not counted, so a client that backs off for `Retry-After` seconds
gets through. In Redis rather than in process so that several web processes share one limit.

When Redis cannot answer, requests are allowed (a licence check must not depend on Redis) and
the concurrency limit of the licence routes still protects the database."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

WINDOW_SECONDS = 60

# KEYS: this window's counter, the previous one's. ARGV: seconds into this window, window, limit.
# Returns 0 when allowed (and counted), else the seconds until it would be.
_SCRIPT = """
local elapsed = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if previous * (window - elapsed) / window + current + 1 <= limit then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], window * 2)
  return 0
end
if current + 1 > limit then  -- not before this window has ended and enough of it has slid out
  return math.ceil(window - elapsed + window * (1 - (limit - 1) / current))
end
local wait = window * (1 - (limit - current - 1) / previous) - elapsed
return math.max(1, math.ceil(wait))
"""


class TokenBucket:
    """`rate` requests a second in this process, bursts of up to `rate`: memory only, no I/O, so
    it can refuse before anything that costs (a Redis round trip, the body, the database)."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.clock = rate, clock
        self.tokens, self.updated = float(rate), clock()

    def take(self) -> bool:
        if self.rate <= 0:
            return True
        now = self.clock()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class RateLimiter:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._script = redis.register_script(_SCRIPT)

    async def retry_after(self, scope: str, identity: str, limit: int, now: float | None = None) -> int | None:
        """None when this request is allowed (and counted), else the seconds to wait.

        `identity` (an address, a licence key) is hashed: no key or address is stored in Redis.
        A limit of 0 means no limit; a Redis failure allows the request."""
        if limit <= 0:
            return None
        now = time.time() if now is None else now
        slot, elapsed = divmod(now, WINDOW_SECONDS)
        digest = hashlib.sha256(identity.encode()).hexdigest()[:32]
        base = f"{self.prefix}:{scope}:{digest}"
        try:
            wait = await self._script(keys=[f"{base}:{int(slot)}", f"{base}:{int(slot) - 1}"],
                                      args=[elapsed, WINDOW_SECONDS, limit])
        except (RedisError, OSError, TimeoutError):
            return None
        return max(1, math.ceil(float(wait))) if wait else None
