"""A Redis lock (SET NX PX with a token) so that two workers, or a worker and the CLI, never scan
at the same time. arq's `unique` cron only stops two workers enqueueing the same tick; a scan
that outlasts its interval, or one started at worker start-up, is kept single by this lock."""

from __future__ import annotations

import secrets

from redis.asyncio import Redis

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class ScanLock:
    def __init__(self, redis: Redis, key: str, ttl_seconds: float = 600.0) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = secrets.token_hex(16)
        self.held = False

    async def acquire(self) -> bool:
        self.held = bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    async def refresh(self) -> None:
        """Extend the lease while a long scan goes on (called once per page)."""
        if self.held:
            await self.redis.eval(_REFRESH, 1, self.key, self.token, str(self.ttl_ms))  # type: ignore[misc]

    async def release(self) -> None:
        if self.held:
            await self.redis.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]
            self.held = False


def lock_key(queue_name: str) -> str:
    return f"{queue_name}:reconcile:lock"
