"""Benchmark of the worker: events per second from inbox to processed with the built-in
entitlement handlers, against arq running no-op jobs in the same run (same Redis, same
concurrency, same poll interval); and p50/p99 from POST to processed at a steady rate.

    .venv/bin/python bench/worker.py [--events 2000] [--rate 200] [--seconds 30] [--repeat 1] [--pipeline]

Throughput: N distinct paid orders (each a licence key and a file from the catalog) are put in
the inbox and on the queue before the clock starts; the real arq worker (`build_worker`) then
drains them. The clock runs from the end of the worker's start-up to the last
`processed_at`. The baseline is an arq worker with the same options draining N no-op jobs, run
just before and just after ours; the faster of the two counts.
`--pipeline` adds the same drain with one handler that does nothing: the floor that one arq job,
one claim and one run record per event set, whatever the handlers do.

Latency: the real receiver (uvicorn, `create_app`) and the real `dodo-worker worker` run in their
own processes; signed webhooks are sent open loop (each at its scheduled instant, whatever the
answers before it) and latency is `processed_at` (worker/store/models.py, set when the event
settles) minus the scheduled send time, so a slow answer cannot hide queueing.

SQLite always; PostgreSQL when a server answers at BENCH_DATABASE_URL, TEST_DATABASE_URL or
postgresql+asyncpg://postgres@127.0.0.1:5432/postgres (a database is created and dropped).
Redis: REDIS_URL or redis://127.0.0.1:6379; every key is under a fresh queue name or job id
prefix and deleted afterwards. Figures, and the history behind them: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.processes import stop_process  # noqa: E402
from bench.receiver import serve  # noqa: E402
from worker.samples import load_sample  # noqa: E402
from worker.signing import generate_secret, signed_headers  # noqa: E402

PRODUCT = "pdt_bench"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"


# inputs -----------------------------------------------------------------------------------------

def write_catalog(directory: Path) -> Path:
    """A catalog where the product grants a licence key and a file."""
    (directory / "files").mkdir(parents=True, exist_ok=True)
    (directory / "files" / "guide.pdf").write_bytes(b"%PDF-1.4\n% bench\n%%EOF\n")
    path = directory / "entitlements.toml"
    path.write_text(f'[products.{PRODUCT}]\nlicense_key = {{ activations_limit = 2 }}\nfiles = ["files/guide.pdf"]\n')
    return path


def order_body(n: int, prefix: str) -> str:
    """A distinct paid order: its own payment and customer."""
    body = load_sample("payment.succeeded")
    body["type"] = "payment.succeeded"
    data = body["data"]
    data.update({"payment_id": f"pay_{prefix}_{n}", "status": "succeeded", "refunds": [], "disputes": [],
                 "refund_status": None, "subscription_id": None,
                 "product_cart": [{"product_id": PRODUCT, "quantity": 1}],
                 "customer": {"customer_id": f"cus_{prefix}_{n}", "email": f"buyer{n}@example.com",
                              "name": "Bench Buyer", "metadata": {}, "phone_number": None}})
    return json.dumps(body)


def entitlement_registry() -> Any:
    """A registry with the built-in entitlement handlers only (not handlers/example.py)."""
    import handlers.entitlements as module
    from worker.registry import Registry, default_registry

    registry = Registry()
    for handler in default_registry:
        if handler.func.__module__ == module.__name__:
            registry.add(handler.func, handler.patterns, name=handler.name, batched=handler.batched,
                  prepare=handler.prepare)
    return registry


def noop_registry() -> Any:
    """A registry whose only handler (batched, for payment.succeeded) does nothing: what the
    pipeline itself costs per event (its arq job, the claim, the run record, the settling)."""
    from worker.registry import Registry

    async def nothing(event: Any, ctx: Any) -> None:
        return None

    registry = Registry()
    registry.add(nothing, ["payment.succeeded"], name="bench.nothing", batched=True)
    return registry


def postgres_admin_url() -> str | None:
    """The PostgreSQL admin URL to use, if a server answers there."""
    from sqlalchemy.engine import make_url

    url = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("TEST_DATABASE_URL") or DEFAULT_PG
    parsed = make_url(url)
    try:
        socket.create_connection((parsed.host or "127.0.0.1", parsed.port or 5432), 1).close()
    except OSError:
        return None
    return url


@contextlib.asynccontextmanager
async def database(kind: str, tmp: str):  # type: ignore[no-untyped-def]
    from tests.support import fresh_database

    if kind == "postgresql":
        os.environ["TEST_DATABASE_URL"] = postgres_admin_url() or DEFAULT_PG
    async with fresh_database(kind, tmp) as url:
        yield url


def bench_settings(db_url: str, redis_url: str, catalog: Path, concurrency: int) -> Any:
    from worker.settings import load_settings

    return load_settings(
        DODO_PAYMENTS_WEBHOOK_KEY=generate_secret(), DATABASE_URL=db_url, REDIS_URL=redis_url,
        QUEUE_NAME=f"bench:{uuid.uuid4().hex[:10]}", HANDLER_MODULES="", ENTITLEMENTS_FILE=str(catalog),
        WORKER_CONCURRENCY=concurrency, LOG_LEVEL="WARNING", DODO_PAYMENTS_API_KEY="",
    )


async def clean_redis(redis_url: str, patterns: list[str]) -> None:
    from tests.support import delete_keys

    await delete_keys(redis_url, patterns)


# throughput --------------------------------------------------------------------------------------

async def fill_inbox(settings: Any, count: int, prefix: str) -> list[str]:
    from worker import queue
    from worker.store import Database
    from worker.store.inbox import NewEvent, insert_events

    ids = [f"{prefix}_{n}" for n in range(count)]
    events = [NewEvent(id=event_id, type="payment.succeeded", body=order_body(n, prefix),
                       object_id=f"pay_{prefix}_{n}") for n, event_id in enumerate(ids)]
    db = Database(settings.DATABASE_URL)
    redis = queue.connect(settings.REDIS_URL)
    try:
        for start in range(0, count, 250):
            await insert_events(db, events[start:start + 250])
            assert await queue.enqueue_events(redis, settings.QUEUE_NAME, ids[start:start + 250])
    finally:
        await db.dispose()
        await redis.aclose()
    return ids


async def last_processed(settings: Any, expected: int, grants_each: int = 2) -> float:
    """Wall time of the last `processed_at`, after checking every event got there."""
    from sqlalchemy import func, select

    from worker.entitlements.models import GrantRow
    from worker.store import Database, EventRow

    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            done = await session.scalar(select(func.count()).where(EventRow.status == "processed"))
            last = await session.scalar(select(func.max(EventRow.processed_at)))
            grants = await session.scalar(select(func.count()).select_from(GrantRow))
    finally:
        await db.dispose()
    assert done == expected, f"{done} of {expected} events processed"
    assert grants == grants_each * expected, f"{grants} grants for {expected} orders (want {grants_each} each)"
    assert last is not None
    return float(last.timestamp())


class StartClock:
    """Wrap a worker's on_startup so the clock starts when the worker is ready to pick jobs."""

    def __init__(self, startup: Any) -> None:
        self.startup = startup
        self.started = 0.0

    async def __call__(self, ctx: dict[str, Any]) -> None:
        if self.startup is not None:
            await self.startup(ctx)
        self.started = time.time()


def processed_counter(settings: Any) -> Any:
    """A cheap check for `drain`: has every event of the inbox been processed?"""
    from sqlalchemy import func, select

    from worker.store import Database, EventRow

    db = Database(settings.DATABASE_URL)

    async def count() -> int:
        async with db.sessions() as session:
            return int(await session.scalar(select(func.count()).where(EventRow.status == "processed")) or 0)

    count.db = db  # type: ignore[attr-defined]
    return count


async def drain(worker: Any, done: Any) -> None:
    """Run an arq worker until `done()` says every job ran, then stop it.

    Not arq's burst mode from the start: the worker's cron jobs keep future jobs on the queue, so
    it would never end. Once done, a burst limit already reached makes `main()` return by itself."""
    task = asyncio.create_task(worker.main())
    try:
        while not await done():
            if task.done():
                task.result()
                raise RuntimeError("the worker stopped")
            await asyncio.sleep(0.25)
        worker.burst, worker.max_burst_jobs = True, 0
        await asyncio.wait_for(task, 10)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await worker.close()


async def dodo_rate(kind: str, redis_url: str, count: int, concurrency: int, handlers: str = "entitlements") -> float:
    from worker.jobs import build_worker

    with tempfile.TemporaryDirectory() as tmp:
        async with database(kind, tmp) as db_url:
            settings = bench_settings(db_url, redis_url, write_catalog(Path(tmp)), concurrency)
            prefix = f"bw{uuid.uuid4().hex[:8]}"
            await fill_inbox(settings, count, prefix)
            registry = entitlement_registry() if handlers == "entitlements" else noop_registry()
            worker = build_worker(settings, registry, load_modules=False, handle_signals=False)
            clock = StartClock(worker.on_startup)
            worker.on_startup = clock  # type: ignore[assignment]

            counter = processed_counter(settings)

            async def done() -> bool:
                return await counter() >= count

            try:
                await drain(worker, done)
            finally:
                await counter.db.dispose()
                await clean_redis(redis_url, [*queue_patterns(settings.QUEUE_NAME), f"arq:*{prefix}_*"])
            grants_each = 2 if handlers == "entitlements" else 0
            return count / (await last_processed(settings, count, grants_each) - clock.started)


NOOP = {"count": 0, "last": 0.0}  # arq gives each job its own copy of ctx, so not there


async def noop(ctx: dict[str, Any]) -> None:
    NOOP["count"] += 1
    NOOP["last"] = time.time()


def queue_patterns(queue_name: str) -> list[str]:
    """Every Redis key of one queue: its own keys and arq's job keys (job ids start with it)."""
    return [f"{queue_name}*", f"arq:*:{queue_name}:*"]


async def arq_rate(redis_url: str, count: int, concurrency: int) -> float:
    """arq alone: the same worker options, no-op jobs."""
    from arq.worker import func

    from worker import queue
    from worker.jobs import build_worker
    from worker.settings import load_settings

    settings = load_settings(DODO_PAYMENTS_WEBHOOK_KEY=generate_secret(), REDIS_URL=redis_url,
                             QUEUE_NAME=f"bench:{uuid.uuid4().hex[:10]}", WORKER_CONCURRENCY=concurrency)
    prefix = f"bn{uuid.uuid4().hex[:8]}"
    redis = queue.connect(redis_url)
    try:
        for start in range(0, count, 500):
            await asyncio.gather(*(redis.enqueue_job("noop", _job_id=f"{prefix}_{n}", _queue_name=settings.QUEUE_NAME)
                                   for n in range(start, min(count, start + 500))))
    finally:
        await redis.aclose()
    worker = build_worker(settings, load_modules=False, handle_signals=False, functions=[func(noop, name="noop")],
                          cron_jobs=[], on_startup=None, on_shutdown=None)
    clock = StartClock(None)
    worker.on_startup = clock  # type: ignore[assignment]
    NOOP["count"] = 0

    async def done() -> bool:
        return NOOP["count"] >= count

    try:
        await drain(worker, done)
    finally:
        await clean_redis(redis_url, [*queue_patterns(settings.QUEUE_NAME), f"arq:*{prefix}_*"])
    return count / (float(NOOP["last"]) - clock.started)


# latency -----------------------------------------------------------------------------------------

@contextlib.contextmanager
def worker_process(env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`dodo-worker worker`, as deployed."""
    process = subprocess.Popen([sys.executable, "-m", "worker.cli.main", "worker"], cwd=ROOT,
                               env={**os.environ, **env})
    try:
        yield process
    finally:
        stop_process(process, 30)


@dataclass
class Paced:
    ids: list[str]
    scheduled: list[float]  # wall time each request was due
    acks: list[float]  # seconds from due to the answer
    statuses: dict[int, int]


async def paced(port: int, secret: str, prefix: str, rate: float, seconds: float, connections: int = 64) -> Paced:
    """Send rate*seconds signed orders open loop: request i is due at start + i/rate."""
    count = int(rate * seconds)
    ids = [f"{prefix}_{n}" for n in range(count)]
    requests = []
    for n, event_id in enumerate(ids):
        body = order_body(n, prefix)
        requests.append(loadgen.build_request("127.0.0.1", port, "/webhooks/dodo", body.encode(),
                                              signed_headers(secret, body, event_id)))
    start_mono = time.perf_counter() + 0.2
    start_wall = time.time() + (start_mono - time.perf_counter())
    result = Paced(ids, [start_wall + n / rate for n in range(count)], [0.0] * count, {})
    next_index = iter(range(count))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for n in next_index:
                due = start_mono + n / rate
                if (wait := due - time.perf_counter()) > 0:
                    await asyncio.sleep(wait)
                writer.write(requests[n])
                status = await loadgen._read_response(reader)
                result.acks[n] = time.perf_counter() - due
                result.statuses[status] = result.statuses.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return result


async def processed_times(db_url: str, ids: list[str], timeout: float = 600) -> dict[str, float]:
    from sqlalchemy import select

    from worker.store import Database, EventRow

    db = Database(db_url)
    wanted = set(ids)
    deadline = time.monotonic() + timeout
    try:
        while True:
            async with db.sessions() as session:
                rows = (await session.execute(select(EventRow.id, EventRow.processed_at)
                                              .where(EventRow.status == "processed"))).all()
            found = {event_id: at.timestamp() for event_id, at in rows if event_id in wanted and at is not None}
            if len(found) == len(wanted) or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)
    finally:
        await db.dispose()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def latency(kind: str, redis_url: str, rate: float, seconds: float, concurrency: int,
                  processes: int = 1) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with database(kind, tmp) as db_url:
            settings = bench_settings(db_url, redis_url, write_catalog(Path(tmp)), concurrency)
            secret = settings.webhook_secrets[0]
            env = {"DODO_PAYMENTS_WEBHOOK_KEY": secret, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
                   "QUEUE_NAME": settings.QUEUE_NAME, "HANDLER_MODULES": "handlers.entitlements",
                   "ENTITLEMENTS_FILE": str(settings.ENTITLEMENTS_FILE), "LOG_LEVEL": "WARNING",
                   "WORKER_CONCURRENCY": str(concurrency), "DODO_PAYMENTS_API_KEY": ""}
            prefix = f"bl{uuid.uuid4().hex[:8]}"
            try:
                with serve("uvicorn", "receiver", env) as port, contextlib.ExitStack() as workers:
                    for _ in range(processes):
                        workers.enter_context(worker_process(env))
                    warm = await paced(port, secret, prefix + "w", rate, 2)  # connections, pools, caches
                    assert len(await processed_times(db_url, warm.ids, 60)) == len(warm.ids), "warm-up lost events"
                    run = await paced(port, secret, prefix, rate, seconds)
                    done = await processed_times(db_url, run.ids)
            finally:
                await clean_redis(redis_url, [*queue_patterns(settings.QUEUE_NAME), f"arq:*{prefix}*"])
    assert run.statuses == {200: len(run.ids)}, run.statuses
    assert len(done) == len(run.ids), f"{len(done)} of {len(run.ids)} processed"
    total = [done[event_id] - due for event_id, due in zip(run.ids, run.scheduled, strict=True)]
    ms = [v * 1000 for v in total]
    return {"events": len(run.ids), "rate": rate, "workers": processes, "p50_ms": round(percentile(ms, 50), 1),
            "p99_ms": round(percentile(ms, 99), 1), "max_ms": round(max(ms), 1),
            "mean_ms": round(statistics.fmean(ms), 1),
            "ack_p50_ms": round(percentile(run.acks, 50) * 1000, 1),
            "ack_p99_ms": round(percentile(run.acks, 99) * 1000, 1)}


# main --------------------------------------------------------------------------------------------

async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=2000, help="events per throughput run")
    parser.add_argument("--concurrency", type=int, default=None, help="WORKER_CONCURRENCY (default: the setting's)")
    parser.add_argument("--rate", type=float, default=200, help="events per second in the latency run")
    parser.add_argument("--seconds", type=float, default=30, help="length of the latency run")
    parser.add_argument("--workers", type=int, default=1, help="worker processes in the latency run")
    parser.add_argument("--repeat", type=int, default=1, help="run everything this many times")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append")
    parser.add_argument("--skip", choices=["throughput", "latency"], action="append", default=[])
    parser.add_argument("--pipeline", action="store_true",
                        help="also time the pipeline alone: one batched handler that does nothing")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    from worker.settings import Settings

    concurrency = args.concurrency or Settings.model_fields["WORKER_CONCURRENCY"].default
    backends = args.backend or (["sqlite"] + (["postgresql"] if postgres_admin_url() else []))
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    rows: list[dict[str, Any]] = []
    for attempt in range(1, args.repeat + 1):
        for kind in backends:
            row: dict[str, Any] = {"run": attempt, "backend": kind, "concurrency": concurrency}
            if "throughput" not in args.skip:
                # arq before and after ours, and the faster of the two: a baseline that a busy
                # moment of the machine (a dropped database's clean-up) cannot make look slow.
                before = await arq_rate(redis_url, args.events, concurrency)
                row["dodo_per_s"] = round(await dodo_rate(kind, redis_url, args.events, concurrency), 1)
                after = await arq_rate(redis_url, args.events, concurrency)
                row["arq_noop_per_s"] = round(max(before, after), 1)
                row["ratio"] = round(row["dodo_per_s"] / row["arq_noop_per_s"], 3)
                if args.pipeline:
                    row["pipeline_per_s"] = round(await dodo_rate(kind, redis_url, args.events, concurrency, "none"), 1)
            if "latency" not in args.skip:
                row["latency"] = await latency(kind, redis_url, args.rate, args.seconds, concurrency, args.workers)
            rows.append(row)
            if not args.json:
                print_row(row, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))


def print_row(row: dict[str, Any], flush: bool = False) -> None:
    parts = [f"run {row['run']}", f"{row['backend']:10}", f"concurrency {row['concurrency']}"]
    if "ratio" in row:
        parts.append(f"arq no-op {row['arq_noop_per_s']:7.0f}/s  dodo {row['dodo_per_s']:6.0f}/s  "
                     f"ratio {row['ratio']:.2f}")
    if "pipeline_per_s" in row:
        parts.append(f"pipeline alone {row['pipeline_per_s']:6.0f}/s")
    if "latency" in row:
        lat = row["latency"]
        parts.append(f"at {lat['rate']:.0f}/s, {lat['workers']} worker(s): p50 {lat['p50_ms']:.0f} ms  "
                     f"p99 {lat['p99_ms']:.0f} ms  max {lat['max_ms']:.0f} ms (ack p99 {lat['ack_p99_ms']:.0f} ms)")
    print("  ".join(parts), flush=flush)


if __name__ == "__main__":
    asyncio.run(main())
