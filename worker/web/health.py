"""`/health`, `/ready` and `/metrics`."""

from __future__ import annotations

import asyncio

from litestar import Response, get
from litestar.datastructures import State
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text

from worker import metrics
from worker.runtime import Runtime
from worker.store import EventStatus, inbox
from worker.store.database import is_missing_table
from worker.store.models import utcnow
from worker.web.responses import json_response

CHECK_TIMEOUT_SECONDS = 2.0


@get("/health")
async def health() -> Response[bytes]:
    return json_response({"status": "ok"})


OK, UNAVAILABLE, NO_TABLES = "ok", "unavailable", "no tables"
# Reads no row, but fails when the inbox table is gone (tables dropped, or the wrong database).
SCHEMA_PROBE = text("SELECT 1 FROM events WHERE 1 = 0")


async def _sql_state(runtime: Runtime) -> str:
    try:
        async with runtime.db.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(SCHEMA_PROBE), CHECK_TIMEOUT_SECONDS)
        return OK
    except Exception as exc:
        return NO_TABLES if is_missing_table(exc) else UNAVAILABLE


async def _redis_state(runtime: Runtime) -> str:
    try:
        return OK if await asyncio.wait_for(runtime.redis.ping(), CHECK_TIMEOUT_SECONDS) else UNAVAILABLE
    except Exception:
        return UNAVAILABLE


@get("/ready")
async def ready(state: State) -> Response[bytes]:
    runtime: Runtime = state.runtime
    sql, redis = await asyncio.gather(_sql_state(runtime), _redis_state(runtime))
    checks = {"sql": sql, "redis": redis}
    if sql == OK and redis == OK:
        return json_response({"status": "ready", **checks})
    failed = [f"{name} {'has no tables: run dodo-worker db upgrade' if value == NO_TABLES else value}"
              for name, value in checks.items() if value != OK]
    return json_response({"error": " and ".join(failed), **checks}, status_code=503)


@get("/metrics")
async def metrics_endpoint(state: State) -> Response[bytes]:
    runtime: Runtime = state.runtime
    await runtime.metrics.flush()
    gauges = []
    up = GaugeMetricFamily("dodo_metrics_store_up", "1 when shared counters could be read from Redis.")
    try:
        values = await asyncio.wait_for(runtime.metrics.snapshot(), CHECK_TIMEOUT_SECONDS)
        depth = await asyncio.wait_for(runtime.redis.zcard(runtime.settings.QUEUE_NAME), CHECK_TIMEOUT_SECONDS)
        gauges.append(GaugeMetricFamily("dodo_queue_depth", "Jobs waiting in the arq queue.", value=depth))
        up.add_metric([], 1)
    except Exception:
        values = {}
        up.add_metric([], 0)
    gauges.append(up)
    try:
        async with runtime.db.sessions() as session:
            counts = await inbox.count_by_status(
                session, [s for s in EventStatus.ALL if s not in EventStatus.SETTLED] + [EventStatus.DEAD]
            )
            oldest = await inbox.oldest_pending_received_at(session)
        family = GaugeMetricFamily("dodo_events", "Events in the inbox now, by unsettled status.",
                                   labels=["status"])
        for status, count in counts.items():
            family.add_metric([status], count)
        gauges.append(family)
        age = (utcnow() - oldest).total_seconds() if oldest else 0.0
        gauges.append(GaugeMetricFamily("dodo_queue_oldest_age_seconds",
                                        "Age of the oldest event not yet picked up.", value=age))
    except Exception:  # noqa: S110 - metrics must render even while SQL is down
        pass
    return Response(content=metrics.render(values, gauges), media_type="text/plain; version=0.0.4")
