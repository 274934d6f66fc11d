"""Benchmark of reconciliation: a scan of 10,000 payments against the fake Dodo API served over
HTTP in its own process (tests/fakedodo/server.py), on SQLite and PostgreSQL.

    .venv/bin/python bench/reconcile.py [--payments 10000] [--present 0.9] [--latency-ms 0]
                                        [--backend sqlite] [--json]

The fake holds N succeeded payments spread over the last 40 hours (inside the first scan's 48 h
look-back) and 1% of them refunded. Before the clock starts, the inbox gets a processed
`payment.succeeded` for the fraction `--present` of them (as if their webhooks had arrived), so
the rest are missing (on PostgreSQL the table is then ANALYZEd, as autovacuum would have done).
Then, through `worker.reconcile.service.reconcile` (what the CLI runs), three scans are timed:

1. first: no high-water mark yet, so the window is the look-back: every page of every list is
   read, and each missing payment and refund is fetched in full and injected;
2. rescan: the same window again (`--since 48h`): nothing is missing, so no fetch at all;
3. scheduled: the next scan on the schedule, from the mark less the overlap (60 min): only the
   last hour or so of payments is read.

"API calls" are the HTTP requests the scan sent (counted by the reader, retries included).
Repaired events are queued on Redis (REDIS_URL or redis://127.0.0.1:6379) under a fresh queue
name that is deleted afterwards; no worker runs them, so this times the scan alone.

PostgreSQL when a server answers at BENCH_DATABASE_URL, TEST_DATABASE_URL or
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres (a database is created and dropped).
Figures: docs/performance.md and docs/reconciliation.md ("Cost").
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.processes import stop_process  # noqa: E402

API_KEY = "sk_test_bench_0123456789"
SPREAD_HOURS = 40.0
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


def reachable(url: str, default_port: int) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url.replace("+asyncpg", ""))
    try:
        socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), 1).close()
    except OSError:
        return False
    return True


def postgres_admin_url() -> str | None:
    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG
    return url if reachable(url, 5432) else None


def redis_url() -> str | None:
    url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    return url if reachable(url, 6379) else None


@contextlib.asynccontextmanager
async def database(kind: str, tmp: str) -> AsyncIterator[str]:
    """A fresh migrated database (PostgreSQL: created, then dropped)."""
    from tests.support import fresh_database

    if kind == "postgresql":
        os.environ["TEST_DATABASE_URL"] = postgres_admin_url() or DEFAULT_PG
    async with fresh_database(kind, tmp) as url:
        yield url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def fake_api(payments: int, latency_ms: float) -> Iterator[str]:
    """The fake Dodo API in its own process; its base URL once it answers."""
    port = free_port()
    command = [sys.executable, "-m", "tests.fakedodo", "--port", str(port), "--payments", str(payments),
               "--refunds", str(payments // 100), "--spread-hours", str(SPREAD_HOURS), "--api-key", API_KEY,
               "--latency-ms", str(latency_ms)]
    process = subprocess.Popen(command, cwd=ROOT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the fake Dodo API did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process(process)


def is_present(n: int, present: float) -> bool:
    """Payment n's webhook arrived: every k-th payment is missing, k = 1 / (1 - present)."""
    if present >= 1:
        return True
    return n % max(1, round(1 / (1 - present))) != 0


async def prefill(url: str, payments: int, present: float) -> int:
    """Processed `payment.succeeded` events for the payments whose webhooks arrived."""
    from sqlalchemy import update

    from worker.store import Database, EventRow, EventSource, EventStatus
    from worker.store.inbox import NewEvent, insert_events

    db = Database(url)
    count = 0
    try:
        batch: list[NewEvent] = []
        for n in range(payments):
            if not is_present(n, present):
                continue
            pid = f"pay_{n:06d}"
            body = json.dumps({"type": "payment.succeeded", "data": {"payment_id": pid}})
            batch.append(NewEvent(id=f"msg_{pid}", type="payment.succeeded", body=body,
                                  source=EventSource.WEBHOOK, object_id=pid))
            if len(batch) == 1000:
                count += len(await insert_events(db, batch))
                batch = []
        count += len(await insert_events(db, batch))
        async with db.sessions() as session, session.begin():
            await session.execute(update(EventRow).values(status=EventStatus.PROCESSED))
        if db.dialect == "postgresql":
            # Fresh planner statistics, as autovacuum keeps them for an inbox that grew over
            # time; right after a bulk load the planner would scan every payment event.
            async with db.engine.begin() as conn:
                await conn.exec_driver_sql("ANALYZE events")
    finally:
        await db.dispose()
    return count


async def measure(backend: str, api_url: str, args: argparse.Namespace, redis_url: str | None,
                  tmp: str) -> list[dict[str, Any]]:
    from integrations.dodo import DodoReader, create_client
    from worker import queue
    from worker.reconcile.service import Request, reconcile
    from worker.settings import load_settings
    from worker.store import Database
    from worker.store.models import utcnow

    rows: list[dict[str, Any]] = []
    async with database(backend, tmp) as url:
        present = await prefill(url, args.payments, args.present)
        settings = load_settings(DATABASE_URL=url, REDIS_URL=redis_url, HANDLER_MODULES="",
                                 QUEUE_NAME=f"bench-reconcile:{uuid.uuid4().hex[:8]}",
                                 DODO_PAYMENTS_API_KEY=API_KEY, DODO_PAYMENTS_BASE_URL=api_url)
        client = create_client(settings)
        assert client is not None
        db = Database(url)
        redis = queue.connect(redis_url) if redis_url else None
        reports = []
        try:
            scans = [("first (look-back 48 h)", None), ("rescan, nothing missing", timedelta(hours=48)),
                     ("scheduled (mark - 60 min)", None)]
            for name, since in scans:
                reader = DodoReader(client)
                request = Request(trigger="cli", since=utcnow() - since if since else None)
                started = time.perf_counter()
                report = await reconcile(settings, db, reader, redis, request)
                seconds = time.perf_counter() - started
                reports.append(report)
                rows.append({
                    "backend": backend, "scan": name, "payments_in_api": args.payments,
                    "already_in_inbox": present, "scanned": report.scanned, "pages": report.pages,
                    "fetched": len(report.repaired), "repaired": len(report.repaired),
                    "api_calls": report.api_calls, "seconds": round(seconds, 2),
                    "scanned_per_second": round(report.scanned / seconds) if seconds else None,
                })
        finally:
            await client.close()
            await db.dispose()
            if redis is not None:
                # arq names its job keys by job id: queue name + event id (worker/queue.py job_id).
                ids = [item.event_id for r in reports for item in r.repaired]
                prefixes = ("arq:job:", "arq:in-progress:", "arq:retry:")
                keys = [f"{p}{settings.QUEUE_NAME}:{i}" for i in ids for p in prefixes]
                for start in range(0, len(keys), 1000):
                    await redis.delete(*keys[start:start + 1000])
                for pattern in (f"{settings.QUEUE_NAME}*", f"arq:*:{settings.QUEUE_NAME}:*"):  # + cron jobs
                    async for key in redis.scan_iter(match=pattern, count=1000):
                        await redis.delete(key)
                await redis.aclose(close_connection_pool=True)
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--present", type=float, default=0.9, help="fraction already in the inbox")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="delay the fake adds to each answer (the real API's round trip)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    backends = args.backend or ["sqlite"] + (["postgresql"] if postgres_admin_url() else [])
    redis = redis_url()
    rows: list[dict[str, Any]] = []
    with fake_api(args.payments, args.latency_ms) as api_url, tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            rows += await measure(backend, api_url, args, redis, tmp)
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'backend':<11} {'scan':<27} {'scanned':>8} {'pages':>6} {'fetched':>8} {'API calls':>10} "
          f"{'seconds':>8} {'per s':>7}")
    for r in rows:
        print(f"{r['backend']:<11} {r['scan']:<27} {r['scanned']:>8} {r['pages']:>6} {r['fetched']:>8} "
              f"{r['api_calls']:>10} {r['seconds']:>8} {r['scanned_per_second']:>7}")
    if not redis:
        print("(no Redis: repaired events were left for the sweeper, not queued)")


if __name__ == "__main__":
    asyncio.run(main())
