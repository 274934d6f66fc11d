"""A Redis lease (SET NX PX with a random token) so that two workers, or a worker and the CLI,
never scan at the same time.

arq's `unique` cron only stops two workers enqueueing the same tick; a scan started at worker
start-up, or one that outlasts its interval, is kept single by this lease. The lease is short
(a killed worker's lease lapses within `ttl_seconds`) and a heartbeat task renews it while the
scan runs, however long one page or one rate-limit wait takes.

The lease saves API calls, it does not make repairs safe: synthetic event ids are deterministic
and inserted with ON CONFLICT DO NOTHING, so two scans overlapping after a lost lease still
create each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("dodo_worker.reconcile")

DEFAULT_TTL_SECONDS = 60.0

_REFRESH = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LockLost(Exception):
    """The lease expired and someone else may hold it now: this scan stops."""


class ScanLock:
    def __init__(self, redis: Redis, key: str, ttl_seconds: float = DEFAULT_TTL_SECONDS) -> None:
        self.redis = redis
        self.key = key
        self.ttl_ms = int(ttl_seconds * 1000)
        self.token = secrets.token_hex(16)
        self.held = False
        self.lost = False

    async def acquire(self) -> bool:
        self.held = bool(await self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))
        return self.held

    async def refresh(self) -> bool:
        """Extend the lease; False when it is no longer ours."""
        if not self.held:
            return False
        renewed = await self.redis.eval(_REFRESH, 1, self.key, self.token, str(self.ttl_ms))  # type: ignore[misc]
        if not renewed:
            self.held, self.lost = False, True
        return bool(renewed)

    def check(self) -> None:
        """Raise LockLost if the heartbeat found the lease gone (called between pages)."""
        if self.lost:
            raise LockLost("the reconciliation lock expired while scanning")

    async def release(self) -> None:
        if self.held:
            await self.redis.eval(_RELEASE, 1, self.key, self.token)  # type: ignore[misc]
            self.held = False

    @contextlib.asynccontextmanager
    async def kept_alive(self) -> AsyncIterator[None]:
        """Renew the lease every third of its TTL while the block runs."""

        async def beat() -> None:
            while self.held:
                await asyncio.sleep(self.ttl_ms / 3000)
                try:
                    if not await self.refresh():
                        log.warning("reconciliation lock %s expired while scanning", self.key)
                        return
                except (RedisError, OSError, TimeoutError) as exc:
                    log.warning("could not renew the reconciliation lock (%s); retrying", type(exc).__name__)

        task = asyncio.create_task(beat())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def lock_key(queue_name: str) -> str:
    return f"{queue_name}:reconcile:lock"
