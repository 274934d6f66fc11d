"""Soak benchmark: a steady mixed load (orders, refunds, licence validations) against real `web`
and `worker` processes for a long time, sampling every 30 s the RSS and open file descriptors of
each process, the open PostgreSQL and Redis connections, the queue's age (the oldest event not yet
processed), the events processed a second, the webhooks' answer time and the errors.

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 30] [--every 30] [--csv soak.csv]

PostgreSQL from BENCH_DATABASE_URL or TEST_DATABASE_URL (an admin URL: a fresh database is made);
Redis from REDIS_URL. At the end it prints a summary and exits 1 when web or worker RSS ended
more than 15 % above its level after the first minute (a leak shows as steady growth), or when
any webhook was not answered 200. Figures: docs/performance.md.

Every licence call comes from its own customer address (X-Forwarded-For, the web process
trusting 127.0.0.1), as a real app's customers do: from one address they would meet the
per-client rate limit and measure nothing but the 429 path.
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
COLUMNS = ["minute", "web_rss_mib", "worker_rss_mib", "web_fds", "worker_fds", "db_connections",
           "redis_clients", "queue_age_s", "sent", "processed", "events_per_s", "webhook_p99_ms", "errors"]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    """Open file descriptors of `pid` (its sockets to clients, PostgreSQL and Redis among them)."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


def refund_body(n: int, prefix: str) -> str:
    body = load_sample("refund.succeeded")
    body["type"] = "refund.succeeded"
    body["data"].update({"refund_id": f"ref_{prefix}_{n}", "payment_id": f"pay_{prefix}_{n}"})
    return json.dumps(body)


class Load:
    """Open-loop traffic at `rate` requests/s: 80 % orders, 10 % refunds of earlier orders, 10 %
    licence validations with made-up keys (`valid: false`, as a mistyped key gets). An error is
    a webhook answered anything but 200, or a licence call answered a 5xx or not at all."""

    def __init__(self, base: str, secret: str, rate: float) -> None:
        self.base, self.secret, self.rate = base, secret, rate
        self.prefix = uuid.uuid4().hex[:8]
        self.sent, self.webhooks, self.errors = 0, 0, 0
        self.statuses: dict[str, int] = {}
        self.webhook_seconds: list[float] = []  # since the last sample

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
        kind = random.random()
        route = "licence" if kind < 0.1 else "webhook"
        started = time.perf_counter()
        try:
            if route == "licence":
                address = f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}"
                response = await client.post("/v1/licenses/validate", json={"license_key": uuid.uuid4().hex},
                                             headers={"X-Forwarded-For": address})
            else:
                body = refund_body(n - 10, self.prefix) if kind < 0.2 and n > 10 else order_body(n, self.prefix)
                response = await client.post("/webhooks/dodo", content=body,
                                             headers=signed_headers(self.secret, body, f"evt_soak_{self.prefix}_{n}"))
            status = str(response.status_code)
        except httpx.HTTPError as exc:  # no answer in time, or a dropped connection
            status = type(exc).__name__
        self.sent += 1
        key = f"{route} {status}"
        self.statuses[key] = self.statuses.get(key, 0) + 1
        if route == "webhook":
            self.webhooks += 1
            self.webhook_seconds.append(time.perf_counter() - started)
            self.errors += status != "200"
        else:
            self.errors += not status.isdigit() or status >= "500"


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
                 minute: float, previous: dict[str, Any] | None) -> dict[str, Any]:
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
    seconds, load.webhook_seconds = load.webhook_seconds, []
    since = (minute - previous["minute"]) * 60 if previous else minute * 60
    rate = (processed - (previous["processed"] if previous else 0)) / since if since > 0 else 0.0
    return {"minute": round(minute, 2), "web_rss_mib": round(rss_mib(procs["web"].pid), 1),
            "worker_rss_mib": round(rss_mib(procs["worker"].pid), 1), "web_fds": open_fds(procs["web"].pid),
            "worker_fds": open_fds(procs["worker"].pid), "db_connections": connections, "redis_clients": clients,
            # received_at is stamped by the web process's clock, now() by PostgreSQL's: clamp the skew
            "queue_age_s": round(max(0.0, float(oldest or 0)), 2), "sent": load.sent, "processed": processed,
            "events_per_s": round(rate, 1), "webhook_p99_ms": round(p99(seconds) * 1000, 1), "errors": load.errors}


def rss_check(rows: list[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """Per process: RSS after the first minute, at the end, and the growth between (a fraction)."""
    base = next((row for row in rows if row["minute"] >= 1), None)
    if base is None or base is rows[-1]:
        return {}
    return {name: (base[name], rows[-1][name], rows[-1][name] / base[name] - 1)
            for name in ("web_rss_mib", "worker_rss_mib")}


def summary(rows: list[dict[str, Any]], load: Load, rate: float) -> bool:
    """Print the summary; True when RSS stayed within 15 % and every webhook was answered 200."""
    growth = rss_check(rows)
    minutes = rows[-1]["minute"]
    print(f"\n{minutes:.1f} min at {rate:g} requests/s: {load.sent} sent ({load.webhooks} webhooks), "
          f"{rows[-1]['processed']} events processed ({rows[-1]['processed'] / (minutes * 60):.1f}/s)")
    print(f"answers {dict(sorted(load.statuses.items()))}; errors {load.errors}")
    for column in ("web_fds", "worker_fds", "db_connections", "redis_clients", "queue_age_s", "webhook_p99_ms"):
        values = [row[column] for row in rows]
        print(f"{column}: min {min(values)}, max {max(values)}, last {values[-1]}")
    ok = load.errors == 0 and load.webhooks == load.statuses.get("webhook 200", 0)
    for name, (base, last, grown) in growth.items():
        peak = max(row[name] for row in rows)
        print(f"{name}: {base} after the first minute, {last} at the end ({grown:+.1%}), peak {peak}")
        ok = ok and grown <= RSS_TOLERANCE
    if not growth:
        print("RSS not checked: the run was shorter than a minute and a sample")
    print("PASS" if ok else "FAIL: RSS grew over 15 % after the first minute, or requests failed")
    return ok


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=30, help="requests per second (90 %% webhooks)")
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
                   "QUEUE_NAME": f"soak:{uuid.uuid4().hex[:8]}", "DODO_PAYMENTS_API_KEY": "",
                   "TRUSTED_PROXIES": "127.0.0.1"}
            redis = Redis.from_url(redis_url)
            async with processes(env, port) as procs:
                load = Load(f"http://127.0.0.1:{port}", secret, args.rate)
                sending = asyncio.create_task(load.run(args.minutes * 60))
                rows: list[dict[str, Any]] = []
                start = time.monotonic()
                print(" ".join(COLUMNS), flush=True)
                while not sending.done():
                    await asyncio.wait([sending], timeout=args.every)
                    row = await sample(db_url, redis, procs, load, (time.monotonic() - start) / 60,
                                       rows[-1] if rows else None)
                    rows.append(row)
                    print(" ".join(f"{row[c]!s:>{len(c)}}" for c in COLUMNS), flush=True)
                await sending
            await redis.aclose()
    if args.csv:
        with args.csv.open("w", newline="") as out:
            writer = csv.DictWriter(out, COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
    if not summary(rows, load, args.rate):
        raise SystemExit(1)


if __name__ == "__main__":
    asyncio.run(main())
