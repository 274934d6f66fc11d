"""Shared metrics: counts from several processes add up in one Redis hash, and `/metrics` renders
them in Prometheus' text format (cumulative histogram buckets, labels kept apart)."""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from worker.metrics import SharedMetrics, render


async def test_histograms_and_counters_of_two_processes_add_up(redis_url: str) -> None:
    key = f"test:metrics:{uuid.uuid4().hex}"
    client = Redis.from_url(redis_url)
    web, worker = SharedMetrics(client, key), SharedMetrics(client, key)
    try:
        for seconds in (0.003, 0.2, 0.2, 7.0):
            worker.observe("dodo_handler_duration_seconds", seconds, handler="entitlements.payment")
        worker.observe("dodo_handler_duration_seconds", 400.0, handler="mine")
        web.inc("dodo_webhooks_received_total", result="accepted")
        worker.inc("dodo_events_processed_total", type="payment.succeeded")
        web.inc("dodo_webhooks_received_total", 2, result="accepted")
        await web.flush()
        await worker.flush()
        text = render(await web.snapshot(), []).decode()
    finally:
        await client.delete(key)
        await client.aclose()

    payment = 'handler="entitlements.payment"'
    assert f'dodo_handler_duration_seconds_bucket{{{payment},le="0.005"}} 1.0' in text
    assert f'dodo_handler_duration_seconds_bucket{{{payment},le="0.1"}} 1.0' in text
    assert f'dodo_handler_duration_seconds_bucket{{{payment},le="0.25"}} 3.0' in text
    assert f'dodo_handler_duration_seconds_bucket{{{payment},le="10.0"}} 4.0' in text
    assert f'dodo_handler_duration_seconds_bucket{{{payment},le="+Inf"}} 4.0' in text
    assert f"dodo_handler_duration_seconds_count{{{payment}}} 4.0" in text
    assert f"dodo_handler_duration_seconds_sum{{{payment}}} 7.403" in text
    assert 'dodo_handler_duration_seconds_bucket{handler="mine",le="300.0"} 1.0' not in text
    assert 'dodo_handler_duration_seconds_bucket{handler="mine",le="+Inf"} 1.0' in text
    assert 'dodo_webhooks_received_total{result="accepted"} 3.0' in text
    assert 'dodo_events_processed_total{type="payment.succeeded"} 1.0' in text
