"""Soak benchmark: a steady mixed load (orders, refunds, licence validations) against real `web`
and `worker` processes for a long time, sampling every 30 s the RSS of each process, the open
PostgreSQL and Redis connections and the queue's age (the oldest event not yet processed).

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 60] [--every 30] [--csv soak.csv]

PostgreSQL from BENCH_DATABASE_URL or TEST_DATABASE_URL (an admin URL: a fresh database is made);
Redis from REDIS_URL. At the end it checks that web and worker RSS stayed within 15 % of their
level after the first minute (a leak shows as steady growth). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from sqlalchemy import text  # noqa: E402
from sqlalchemy.ext.asyncio import create_async_engine  # noqa: E402

from bench.processes import stop_process  # noqa: E402
from bench.worker import database, order_body, write_catalog  # noqa: E402
from worker.embedded_redis import free_port  # noqa: E402
from worker.samples import load_sample  # noqa: E402
from worker.signing import generate_secret, signed_headers  # noqa: E402

RSS_TOLERANCE = 0.15
COLUMNS = ["minute", "web_rss_mib", "worker_rss_mib", "db_connections", "redis_clients", "queue_age_s",
           "sent", "processed"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def refund_body(n: int, prefix: str) -> str:
    body = load_sample("refund.succeeded")
    body["type"] = "refund.succeeded"
    body["data"].update({"refund_id": f"ref_{prefix}_{n}", "payment_id": f"pay_{prefix}_{n}"})
    return json.dumps(body)


class Load:
    """Open-loop traffic at `rate` requests/s: 80 % orders, 10 % refunds of earlier orders, 10 %
    licence validations with made-up keys (a 404 each, as a guessing client gets)."""

    def __init__(self, base: str, secret: str, rate: float) -> None:
        self.base, self.secret, self.rate = base, secret, rate
        self.prefix = uuid.uuid4().hex[:8]
        self.sent, self.webhooks = 0, 0
        self.statuses: dict[int, int] = {}

    async def run(self, seconds: float) -> None:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        async with httpx.AsyncClient(base_url=self.base, timeout=10, limits=limits) as client:
            start = time.perf_counter()
            tasks: set[asyncio.Task[None]] = set()
            n = 0
            while (elapsed := time.perf_counter() - start) < seconds:
                if (wait := n / self.rate - elapsed) > 0:
                    await asyncio.sleep(wait)
                task = asyncio.create_task(self._one(client, n))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                n += 1
            await asyncio.gather(*tasks)

    async def _one(self, client: httpx.AsyncClient, n: int) -> None:
        try:
            status = await self._send(client, n)
        except httpx.HTTPError:  # counted as status 0: the server did not answer in time
            status = 0
        self.sent += 1
        self.statuses[status] = self.statuses.get(status, 0) + 1

    async def _send(self, client: httpx.AsyncClient, n: int) -> int:
        kind = random.random()
        if kind < 0.1:
            response = await client.post("/v1/licenses/validate", json={"license_key": uuid.uuid4().hex})
        else:
            body = refund_body(n - 10, self.prefix) if kind < 0.2 and n > 10 else order_body(n, self.prefix)
            event_id = f"evt_soak_{self.prefix}_{n}"
            response = await client.post("/webhooks/dodo", content=body,
                                         headers=signed_headers(self.secret, body, event_id))
            self.webhooks += 1
        return response.status_code


@contextlib.asynccontextmanager
async def processes(env: dict[str, str], port: int) -> AsyncIterator[dict[str, subprocess.Popen[bytes]]]:
    command = [sys.executable, "-m", "worker.cli.main"]
    subprocess.run([*command, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    procs = {name: subprocess.Popen([*command, name], cwd=ROOT, env=env) for name in ("web", "worker")}
    try:
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{port}/health")).status_code < 500:
                        break
                await asyncio.sleep(0.1)
        yield procs
    finally:
        for proc in procs.values():
            stop_process(proc, 30)


async def sample(db_url: str, redis: Redis, procs: dict[str, subprocess.Popen[bytes]], load: Load,
                 minute: float) -> dict[str, Any]:
    engine = create_async_engine(db_url)
    try:
        async with engine.connect() as conn:
            connections = await conn.scalar(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"))
            oldest = await conn.scalar(text(
                "SELECT EXTRACT(EPOCH FROM now() - min(received_at)) FROM events "
                "WHERE status NOT IN ('processed', 'ignored', 'dead')"))
            processed = await conn.scalar(text("SELECT count(*) FROM events WHERE status = 'processed'"))
    finally:
        await engine.dispose()
    clients = (await redis.info("clients"))["connected_clients"]
    return {"minute": round(minute, 1), "web_rss_mib": round(rss_mib(procs["web"].pid), 1),
            "worker_rss_mib": round(rss_mib(procs["worker"].pid), 1), "db_connections": connections,
            "redis_clients": clients, "queue_age_s": round(float(oldest or 0), 2), "sent": load.sent,
            "processed": processed}


def rss_check(rows: list[dict[str, Any]]) -> list[str]:
    """The processes whose RSS at the end is over 15 % above their level after the first minute."""
    base = next((row for row in rows if row["minute"] >= 1), None)
    if base is None:
        return []
    last = rows[-1]
    return [name for name in ("web_rss_mib", "worker_rss_mib")
            if last[name] > base[name] * (1 + RSS_TOLERANCE)]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=60, help="requests per second")
    parser.add_argument("--every", type=float, default=30, help="seconds between samples")
    parser.add_argument("--csv", type=Path)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    with tempfile.TemporaryDirectory() as tmp:
        async with database("postgresql", tmp) as db_url:
            secret, port = generate_secret(), free_port()
            env = {**os.environ, "DATABASE_URL": db_url, "REDIS_URL": redis_url, "PORT": str(port),
                   "HOST": "127.0.0.1", "DODO_PAYMENTS_WEBHOOK_KEY": secret, "HANDLER_MODULES": "",
                   "ENTITLEMENTS_FILE": str(write_catalog(Path(tmp))), "LOG_LEVEL": "WARNING",
                   "QUEUE_NAME": f"soak:{uuid.uuid4().hex[:8]}", "DODO_PAYMENTS_API_KEY": ""}
            redis = Redis.from_url(redis_url)
            async with processes(env, port) as procs:
                load = Load(f"http://127.0.0.1:{port}", secret, args.rate)
                sending = asyncio.create_task(load.run(args.minutes * 60))
                rows: list[dict[str, Any]] = []
                start = time.monotonic()
                print(" ".join(f"{c:>14}" for c in COLUMNS), flush=True)
                while not sending.done():
                    await asyncio.wait([sending], timeout=args.every)
                    row = await sample(db_url, redis, procs, load, (time.monotonic() - start) / 60)
                    rows.append(row)
                    print(" ".join(f"{row[c]!s:>14}" for c in COLUMNS), flush=True)
                await sending
            await redis.aclose()
    if args.csv:
        with args.csv.open("w", newline="") as out:
            writer = csv.DictWriter(out, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    print(f"statuses {dict(sorted(load.statuses.items()))}")
    grown = rss_check(rows)
    print("RSS within 15 % of its level after the first minute" if not grown else f"RSS grew over 15 %: {grown}")
    if grown:
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
