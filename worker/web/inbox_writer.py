"""Group commit for the receiver: concurrent webhooks share one INSERT, and new events one job.

Per webhook, an INSERT and an arq enqueue cost ~2.5 ms of Python and driver overhead, which
would cap one web process at a few hundred webhooks a second. Instead every request hands its
row to one writer task and awaits the outcome. The writer takes whatever is waiting (one row
when traffic is light, so nothing waits for a timer), inserts it in one statement and one
transaction, and answers each request. A 200 means the row is committed; a failed commit fails
every request of that batch (503).

The new ids go to the queue a moment later (`enqueue_window` seconds, 10 ms by default), together
with those that arrive meanwhile: one arq job for several events, where a job costs the worker
about as much as an event's handlers (at a steady 200 webhooks a second, 2 to 3 events a job
instead of 1). A row whose enqueue fails or never happens (Redis down, the process killed) is
stored `received`, and the worker's sweeper queues it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from arq.connections import ArqRedis
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from worker import queue
from worker.store import Database
from worker.store.inbox import NewEvent, insert_events

log = logging.getLogger("dodo_worker.receiver")
MAX_BATCH = 256


class InboxWriter:
    def __init__(self, db: Database, redis: ArqRedis, queue_name: str, *, enqueue_window: float = 0.01,
                 on_enqueue_failed: Callable[[int], None] | None = None) -> None:
        self.db = db
        self.redis = redis
        self.queue_name = queue_name
        self.enqueue_window = enqueue_window
        self.on_enqueue_failed = on_enqueue_failed
        self._pending: list[tuple[NewEvent, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._new_ids: list[str] = []
        self._new_wake = asyncio.Event()
        self._enqueuing: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        # SQLite has one write lock, so one writer; a server database overlaps two batches so
        # the next is written while the last one's round trip is in flight.
        self.writers = 1 if db.dialect == "sqlite" else 2

    async def submit(self, event: NewEvent) -> bool:
        """Store one event (and queue it soon): True when it is new. Raises what the store raised."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._wake.set()
        return await future

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        if not self._tasks:
            self._tasks.append(loop.create_task(self._enqueue_loop()))
        while len(self._tasks) < self.writers + 1:
            self._tasks.append(loop.create_task(self._run()))

    async def stop(self) -> None:
        while self._pending:  # answer everyone who is waiting before we go
            await self._write_batch()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._enqueuing is not None:  # a job on its way to Redis
            with contextlib.suppress(Exception):
                await self._enqueuing
        await self._enqueue_new()  # what the window still held

    async def _enqueue_loop(self) -> None:
        while True:
            await self._new_wake.wait()
            if len(self._new_ids) < queue.EVENTS_PER_JOB and self.enqueue_window > 0:
                await asyncio.sleep(self.enqueue_window)  # let more events join this job
            self._new_wake.clear()
            self._enqueuing = asyncio.ensure_future(self._enqueue_new())
            try:
                await asyncio.shield(self._enqueuing)  # `stop` waits for it rather than cut it
            except Exception:  # never stop queueing; what failed stays `received` for the sweeper
                log.exception("queueing new events failed")

    async def _enqueue_new(self) -> None:
        ids, self._new_ids = self._new_ids, []
        if not ids or await queue.enqueue_events(self.redis, self.queue_name, ids):
            return
        if self.on_enqueue_failed is not None:  # they stay `received`; the sweeper queues them
            self.on_enqueue_failed(len(ids))

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._write_batch()

    async def _write_batch(self) -> None:
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        try:
            new_ids = await insert_events(self.db, [event for event, _ in batch])
        except (DataError, IntegrityError, ProgrammingError) as refused:
            if len(batch) == 1:
                raise_on(batch, refused)
                return
            # One row the store refuses must not fail the webhooks that shared its INSERT.
            new_ids = set()
            for item in batch:
                try:
                    new_ids |= await insert_events(self.db, [item[0]])
                except Exception as exc:
                    raise_on([item], exc)
            batch = [item for item in batch if not item[1].done()]
        except Exception as exc:  # the store is down: every request of this batch gets a 503
            raise_on(batch, exc)
            return
        answered: set[str] = set()
        for event, future in batch:  # the first request with a new id stored it; repeats are duplicates
            stored_now = event.id in new_ids and event.id not in answered
            if stored_now:
                self._new_ids.append(event.id)
            answered.add(event.id)
            if not future.done():
                future.set_result(stored_now)
        if self._new_ids:
            self._new_wake.set()


def raise_on(batch: list[tuple[NewEvent, asyncio.Future[bool]]], exc: BaseException | None) -> None:
    """Answer these requests with the store's error (the receiver turns it into a 503)."""
    for _, future in batch:
        if not future.done():
            future.set_exception(exc or RuntimeError("store error"))
