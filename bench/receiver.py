"""Benchmark: webhooks per second and p50/p99 acknowledgement latency of the real receiver
(signature check, inbox insert, enqueue) against a bare Litestar endpoint that only reads the
body, in the same run, on SQLite and PostgreSQL. Each request is a distinct signed event.

    .venv/bin/python bench/receiver.py [--requests 5000] [--concurrency 32] [--server uvicorn]

PostgreSQL is included when TEST_DATABASE_URL (an admin URL) is set; Redis is REDIS_URL or an
embedded server. Servers run in their own process, one worker each, like `dodo-worker web`.
Figures and how to read them: docs/performance.md.
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
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.processes import stop_process  # noqa: E402
from worker.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from worker.samples import load_sample  # noqa: E402
from worker.signing import generate_secret, signed_headers  # noqa: E402


def server_command(server: str, factory: str, port: int) -> list[str]:
    if server == "granian":
        return [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--factory", "--host",
                "127.0.0.1", "--port", str(port), "--workers", "1", "--no-ws", "--log-level", "warning",
                f"bench.apps:{factory}"]
    return [sys.executable, "-m", "uvicorn", f"bench.apps:{factory}", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning", "--no-access-log"]


@contextlib.contextmanager
def serve(server: str, factory: str, env: dict[str, str]) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(server_command(server, factory, port), cwd=ROOT, env={**os.environ, **env})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if process.poll() is not None:
                raise RuntimeError(f"{server} exited with {process.returncode}")
            time.sleep(0.05)
        yield port
    finally:
        stop_process(process)


def signed_requests(port: int, secret: str, count: int, prefix: str) -> list[bytes]:
    sample = load_sample("payment.succeeded")
    requests = []
    for i in range(count):
        sample["data"]["payment_id"] = f"pay_{prefix}_{i}"
        body = json.dumps(sample)
        headers = signed_headers(secret, body, f"{prefix}_{i}")
        requests.append(loadgen.build_request("127.0.0.1", port, "/webhooks/dodo", body.encode(), headers))
    return requests


@contextlib.asynccontextmanager
async def database(kind: str, tmp: str):  # type: ignore[no-untyped-def]
    from tests.support import fresh_database

    async with fresh_database(kind, tmp) as url:
        yield url


async def count_events(url: str) -> int:
    from sqlalchemy import func, select

    from worker.store import Database, EventRow

    db = Database(url)
    try:
        async with db.sessions() as session:
            return int(await session.scalar(select(func.count()).select_from(EventRow)) or 0)
    finally:
        await db.dispose()


async def clean_redis(redis_url: str, queue: str, prefix: str) -> None:
    from tests.support import delete_keys

    await delete_keys(redis_url, [f"{queue}*", f"arq:job:{prefix}_*", f"arq:retry:{prefix}_*"])


async def measure(kind: str, server: str, args: argparse.Namespace, redis_url: str) -> dict[str, object]:
    secret = generate_secret()
    with tempfile.TemporaryDirectory() as tmp:
        async with database(kind, tmp) as db_url:
            queue = f"bench:{uuid.uuid4().hex[:8]}"
            env = {"DODO_PAYMENTS_WEBHOOK_KEY": secret, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
                   "QUEUE_NAME": queue, "LOG_LEVEL": "WARNING"}
            results: dict[str, object] = {"backend": kind, "server": server}
            for factory in ("bare", "receiver"):
                prefix = f"b{uuid.uuid4().hex[:8]}"
                with serve(server, factory, env) as port:
                    warm = signed_requests(port, secret, args.warmup, prefix + "w")
                    await loadgen.run("127.0.0.1", port, warm, args.concurrency)
                    requests = signed_requests(port, secret, args.requests, prefix)
                    result = await loadgen.run("127.0.0.1", port, requests, args.concurrency)
                results[factory] = result.summary()
                if factory == "receiver":
                    stored = await count_events(db_url)
                    results["stored"] = stored
                    assert result.statuses == {200: args.requests}, result.statuses
                    assert stored == args.requests + args.warmup, stored
                await clean_redis(redis_url, queue, prefix)
            bare, real = results["bare"], results["receiver"]
            results["ratio"] = round(real["rps"] / bare["rps"], 3)  # type: ignore[index]
            return results


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--server", choices=["uvicorn", "granian"], action="append")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    servers = args.server or ["uvicorn"]
    backends = ["sqlite"] + (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else [])
    redis = None if os.environ.get("REDIS_URL") else EmbeddedRedis().start()
    redis_url = os.environ.get("REDIS_URL") or redis.url  # type: ignore[union-attr]
    rows = []
    try:
        for server in servers:
            for kind in backends:
                rows.append(await measure(kind, server, args, redis_url))
    finally:
        if redis is not None:
            redis.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{args.requests} signed, distinct webhooks, {args.concurrency} keep-alive connections, one server process")
    print(f"{'server':8} {'backend':10} {'endpoint':9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        for factory in ("bare", "receiver"):
            r = row[factory]
            print(f"{row['server']:8} {row['backend']:10} {factory:9} {r['rps']:8.0f} {r['p50_ms']:8.2f} "  # type: ignore[index]
                  f"{r['p99_ms']:8.2f}")  # type: ignore[index]
        print(f"{'':8} {row['backend']:10} ratio     {row['ratio']:8.2f}")


if __name__ == "__main__":
    asyncio.run(main())
