"""What a web or worker process holds for its lifetime: settings, SQL, Redis, metrics, handlers."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arq.connections import ArqRedis

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
    # The events this process has claimed and not settled yet, with their lease (worker/dispatch.py).
    leases: dict[str, datetime] = field(default_factory=dict)
    stopping: bool = False  # set by `stop_gracefully` as the grace period ends: cut jobs give leases back
    releasing: asyncio.Task[None] | None = None  # worker/dispatch.py `release_leases`, once

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
