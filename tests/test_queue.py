"""Putting events on the queue: the receiver's jobs carry many events, the sweeper's one each;
arq's own worker runs both (jobs written by our enqueue script, not by arq's `enqueue_job`)."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from tests.support import sample_envelope, wait_until
from worker import Context, Event, queue
from worker.registry import Registry
from worker.store import EventStatus
from worker.store.inbox import NewEvent, insert_events


async def queued_jobs(redis_url: str, queue_name: str) -> list[dict[str, Any]]:
    client = Redis.from_url(redis_url)
    try:
        ids = await client.zrange(queue_name, 0, -1)
        return [json.loads(await client.get(b"arq:job:" + job_id)) for job_id in ids]
    finally:
        await client.aclose()


async def test_events_go_fifty_to_a_job_and_each_runs_once(stack_factory, registry: Registry,
                                                          redis_url: str) -> None:
    calls: list[str] = []

    @registry.on("payment.succeeded")
    async def count(event: Event, ctx: Context) -> None:
        calls.append(event.id)

    stack = await stack_factory(web=False, worker=False)
    ids = [f"evt_many_{n:03}" for n in range(120)]
    body = json.dumps(sample_envelope("payment.succeeded"))
    await insert_events(stack.db, [NewEvent(id=event_id, type="payment.succeeded", body=body) for event_id in ids])
    redis = queue.connect(redis_url)
    try:
        assert await queue.enqueue_events(redis, stack.settings.QUEUE_NAME, ids)
    finally:
        await redis.aclose()

    jobs = await queued_jobs(redis_url, stack.settings.QUEUE_NAME)
    assert [job["f"] for job in jobs] == [queue.PROCESS_EVENTS] * 3
    assert sorted(event_id for job in jobs for event_id in job["a"][0]) == ids
    assert max(len(job["a"][0]) for job in jobs) == queue.EVENTS_PER_JOB

    await stack.start_worker()

    async def all_processed() -> bool:
        rows = [await stack.event(event_id) for event_id in ids]
        return all(row is not None and row.status == EventStatus.PROCESSED for row in rows)

    await wait_until(all_processed, what="all 120 events to be processed")
    assert sorted(calls) == ids


async def test_queueing_an_event_again_on_its_own_adds_no_job(stack_factory, redis_url: str) -> None:
    """The sweeper queues the same stuck events every round; one job per event id, whatever."""
    stack = await stack_factory(web=False, worker=False)
    redis = queue.connect(redis_url)
    try:
        for _ in range(3):
            assert await queue.enqueue_each(redis, stack.settings.QUEUE_NAME, ["evt_a", "evt_b"])
    finally:
        await redis.aclose()
    jobs = await queued_jobs(redis_url, stack.settings.QUEUE_NAME)
    assert sorted((job["f"], job["a"][0]) for job in jobs) == [(queue.PROCESS_EVENT, "evt_a"),
                                                               (queue.PROCESS_EVENT, "evt_b")]
