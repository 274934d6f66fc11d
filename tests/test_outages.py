"""Redis down: still 200, processed once Redis is back. SQL down: 503, nothing acknowledged."""

from __future__ import annotations

from worker import Context, Event
from worker.embedded_redis import EmbeddedRedis
from worker.registry import Registry
from worker.store import EventStatus


async def test_redis_down_at_receive_time_then_processed_after_it_returns(
    stack_factory, registry: Registry
) -> None:
    handled: list[str] = []

    @registry.on("payment.succeeded")
    async def record(event: Event, ctx: Context) -> None:
        handled.append(event.id)

    redis = EmbeddedRedis().start()
    try:
        stack = await stack_factory(worker=False, REDIS_URL=redis.url)
        redis.stop()  # Redis goes away while Dodo keeps sending
        ids = []
        for _ in range(3):
            event_id, response = await stack.send("payment.succeeded")
            assert response.status_code == 200
            assert response.json() == {"status": "accepted"}
            ids.append(event_id)
        ready = await stack.http.get(f"{stack.base_url}/ready")
        assert ready.status_code == 503
        assert ready.json()["redis"] == "unavailable"

        redis.start()  # same port: Redis is back, empty
        await stack.start_worker()  # the sweeper at worker start enqueues what never reached Redis
        for event_id in ids:
            await stack.wait_status(event_id, EventStatus.PROCESSED)
        assert sorted(handled) == sorted(ids)
    finally:
        await stack.close()
        redis.close()


async def test_events_stranded_while_the_worker_runs_are_swept_by_the_cron_sweeper(
    stack_factory, registry: Registry
) -> None:
    @registry.on("payment.succeeded")
    async def record(event: Event, ctx: Context) -> None:
        return None

    redis = EmbeddedRedis().start()
    try:
        stack = await stack_factory(worker=False, REDIS_URL=redis.url)
        await stack.start_worker()
        redis.stop()
        event_id, response = await stack.send("payment.succeeded")
        assert response.status_code == 200
        redis.start()
        # No restart: the worker reconnects and its sweeper (every 10 s) finds the event.
        await stack.wait_status(event_id, EventStatus.PROCESSED, timeout=40)
    finally:
        await stack.close()
        redis.close()


async def test_sql_down_answers_503_so_dodo_retries(stack_factory, backend: str, tmp_path) -> None:
    if backend == "postgresql":
        url = "postgresql+asyncpg://postgres@127.0.0.1:9/unreachable"  # nothing listens on port 9
    else:
        url = f"sqlite+aiosqlite:///{tmp_path}/missing-dir/nope.db"  # cannot be opened
    stack = await stack_factory(worker=False, DATABASE_URL=url)
    event_id, response = await stack.send("payment.succeeded")
    assert response.status_code == 503
    assert response.json() == {"error": "store unavailable, retry later"}
    ready = await stack.http.get(f"{stack.base_url}/ready")
    assert ready.status_code == 503
    assert ready.json()["sql"] == "unavailable"
    assert ready.json()["redis"] == "ok"
