"""Group commit: concurrent calls that arrive while earlier ones are busy go together in one batch.

    claims = Coalescer(claim_many, max_size=50, max_running=2)
    claim = await claims.submit(event_id)    # from many arq jobs at once

A call made while fewer than `max_running` batches are running starts a batch at once (so a
lone event waits for nothing); calls made while they are all busy wait, and the next free slot
takes up to `max_size` of them together. Under load batches grow by themselves; idle, every
batch holds one call. `run_batch` gets the items and returns one result per item, in order; if
it raises, every call of that batch raises the same error.

No library in our dependencies does this (asyncio has no batching primitive; aiodataloader is
a GraphQL-flavoured take on the same idea that batches per loop tick, not per free slot).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_size: int,
                 max_running: int = 1) -> None:
        if max_size < 1 or max_running < 1:
            raise ValueError("max_size and max_running must be at least 1")
        self._run_batch = run_batch
        self.max_size = max_size
        self.max_running = max_running
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._running: set[asyncio.Task[None]] = set()
        self._closed = False

    async def submit(self, item: T) -> R:
        if self._closed:
            raise RuntimeError("this coalescer is closed")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        entry = (item, future)
        self._waiting.append(entry)
        self._start_batches()
        try:
            return await future
        except asyncio.CancelledError:
            # A caller cancelled (a job timeout, shutdown) before its batch started leaves the
            # queue: nobody would be left to take its result. One cancelled while its batch runs
            # does not cancel the batch: the other calls in it still want their results.
            if entry in self._waiting:
                self._waiting.remove(entry)
            raise

    def _start_batches(self) -> None:
        while self._waiting and len(self._running) < self.max_running:
            batch, self._waiting = self._waiting[:self.max_size], self._waiting[self.max_size:]
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._closed:
            self._start_batches()

    async def _run(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        batch = [(item, future) for item, future in batch if not future.done()]  # callers gone
        if not batch:
            return
        try:
            results = await self._run_batch([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batch of {len(batch)} returned {len(results)} result(s)")
        except BaseException as exc:  # handed to every caller of the batch
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:  # the batch itself was cancelled (close)
                    future.cancel()
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)

    @property
    def busy(self) -> bool:
        return bool(self._running or self._waiting)

    async def close(self) -> None:
        """Cancel running batches and fail waiting calls (the worker is stopping)."""
        self._closed = True
        waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            if not future.done():
                future.cancel()
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
