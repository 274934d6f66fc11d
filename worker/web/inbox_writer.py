"""Group commit for the receiver: concurrent webhooks share one INSERT and one enqueue.

Per webhook, an INSERT and an arq enqueue cost ~2.5 ms of Python and driver overhead, which
would cap one web process at a few hundred webhooks a second. Instead every request hands its
row to one writer task and awaits the outcome. The writer takes whatever is waiting (one row
when traffic is light, so nothing waits for a timer), inserts it in one statement and one
transaction, enqueues the new ids in one Redis round trip, and only then answers each request.
A 200 still means the row is committed; a failed commit fails every request of that batch (503).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from arq.connections import ArqRedis
from sqlalchemy.exc import DataError, IntegrityError, ProgrammingError

from worker import queue
from worker.store import Database
from worker.store.inbox import NewEvent, insert_events

log = logging.getLogger("dodo_worker.receiver")
MAX_BATCH = 256


class InboxWriter:
    def __init__(self, db: Database, redis: ArqRedis, queue_name: str) -> None:
        self.db = db
        self.redis = redis
        self.queue_name = queue_name
        self._pending: list[tuple[NewEvent, asyncio.Future[tuple[bool, bool]]]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        # SQLite has one write lock, so one writer; a server database overlaps two batches so
        # the next is written while the last one's round trip is in flight.
        self.writers = 1 if db.dialect == "sqlite" else 2

    async def submit(self, event: NewEvent) -> tuple[bool, bool]:
        """Store (and enqueue) one event: (stored now, enqueued). Raises what the store raised."""
        future: asyncio.Future[tuple[bool, bool]] = asyncio.get_running_loop().create_future()
        self._pending.append((event, future))
        self._wake.set()
        return await future

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        while len(self._tasks) < self.writers:
            self._tasks.append(loop.create_task(self._run()))

    async def stop(self) -> None:
        while self._pending:  # answer everyone who is waiting before we go
            await self._write_batch()
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

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
        claimed: set[str] = set()
        fresh = []
        for event, _ in batch:  # the first request with a new id stored it; repeats are duplicates
            if event.id in new_ids and event.id not in claimed:
                claimed.add(event.id)
                fresh.append(event.id)
        enqueued = await queue.enqueue_events(self.redis, self.queue_name, fresh)
        answered: set[str] = set()
        for event, future in batch:
            stored_now = event.id in claimed and event.id not in answered
            answered.add(event.id)
            if not future.done():
                future.set_result((stored_now, enqueued))


def raise_on(batch: list[tuple[NewEvent, asyncio.Future[tuple[bool, bool]]]], exc: BaseException | None) -> None:
    """Answer these requests with the store's error (the receiver turns it into a 503)."""
    for _, future in batch:
        if not future.done():
            future.set_exception(exc or RuntimeError("store error"))
