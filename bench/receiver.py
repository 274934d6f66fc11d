"""Benchmark: webhooks per second and p50/p99 acknowledgement latency of the real receiver
(signature check, inbox insert, enqueue) against a bare Litestar endpoint that only reads the
body, on granian and on uvicorn, in the same run, driven by wrk (a compiled load generator, so
the client costs little of the machine). Each request is a distinct signed event.

    .venv/bin/python bench/receiver.py [--seconds 10] [--connections 32] [--server granian] [--backend postgresql]

Needs wrk (`apt-get install wrk`). PostgreSQL when TEST_DATABASE_URL (an admin URL) is set, else
SQLite; Redis is REDIS_URL or an embedded server. Each server runs in its own process, one worker.
It prints the best receiver's rate over the best bare endpoint's. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LUA = Path(__file__).resolve().parent / "wrk_webhooks.lua"
SERVERS = ("granian", "uvicorn")
sys.path.insert(0, str(ROOT))

from bench.processes import stop_process  # noqa: E402
from worker.embedded_redis import EmbeddedRedis, free_port  # noqa: E402
from worker.samples import load_sample  # noqa: E402
from worker.signing import generate_secret, signed_headers  # noqa: E402


def server_command(server: str, factory: str, port: int, workers: int = 1) -> list[str]:
    if server == "granian":
        return [str(Path(sys.executable).parent / "granian"), "--interface", "asgi", "--factory", "--host",
                "127.0.0.1", "--port", str(port), "--workers", str(workers), "--no-ws", "--log-level", "warning",
                f"bench.apps:{factory}"]
    return [sys.executable, "-m", "uvicorn", f"bench.apps:{factory}", "--factory", "--host", "127.0.0.1",
            "--port", str(port), "--workers", str(workers), "--log-level", "warning", "--no-access-log"]


@contextlib.contextmanager
def serve(server: str, factory: str, env: dict[str, str], workers: int = 1) -> Iterator[int]:
    port = free_port()
    process = subprocess.Popen(server_command(server, factory, port, workers), cwd=ROOT, env={**os.environ, **env})
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


def write_webhooks(path: Path, secret: str, count: int, prefix: str) -> None:
    """`count` distinct signed payment.succeeded webhooks, one a line, for bench/wrk_webhooks.lua."""
    sample = load_sample("payment.succeeded")
    with path.open("w") as out:
        for i in range(count):
            sample["data"]["payment_id"] = f"pay_{prefix}_{i}"
            body = json.dumps(sample, separators=(",", ":"))
            headers = signed_headers(secret, body, f"{prefix}_{i}")
            out.write(f"{headers['webhook-id']}\t{headers['webhook-timestamp']}\t{headers['webhook-signature']}\t{body}\n")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        sys.exit("bench/receiver.py drives the server with wrk: install it (Debian/Ubuntu: "
                 "`apt-get install wrk`; macOS: `brew install wrk`) and run it again")
    return found


def run_wrk(port: int, lines: Path, seconds: float, connections: int) -> dict[str, Any]:
    """One wrk thread, `connections` keep-alive connections, `seconds` long; its summary."""
    command = [wrk_binary(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(LUA), f"http://127.0.0.1:{port}/webhooks/dodo", "--", str(lines)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(text for text in out.splitlines() if text.startswith("WRK "))
    result: dict[str, Any] = json.loads(line.removeprefix("WRK "))
    result["rps"] = result["requests"] / result["seconds"]
    return result


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


async def measure_one(kind: str, server: str, factory: str, args: argparse.Namespace,
                      redis_url: str, tmp: Path) -> dict[str, Any]:
    """One endpoint on one server: a warm-up, then the timed wrk run over distinct events."""
    secret = generate_secret()
    async with database(kind, str(tmp)) as db_url:
        queue = f"bench:{uuid.uuid4().hex[:8]}"
        prefix = f"b{uuid.uuid4().hex[:8]}"
        env = {"DODO_PAYMENTS_WEBHOOK_KEY": secret, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
               "QUEUE_NAME": queue, "LOG_LEVEL": "WARNING"}
        warm, timed = tmp / f"{prefix}-warm.tsv", tmp / f"{prefix}.tsv"
        write_webhooks(warm, secret, args.warmup, prefix + "w")
        write_webhooks(timed, secret, args.lines, prefix)
        try:
            workers = args.receiver_processes if factory == "receiver" else 1
            with serve(server, factory, env, workers) as port:
                await asyncio.sleep(1.0 if workers > 1 else 0)  # every process listening
                run_wrk(port, warm, args.warmup_seconds, args.connections)
                before = await count_events(db_url) if factory == "receiver" else 0
                result = run_wrk(port, timed, args.seconds, args.connections)
            if factory == "receiver":
                stored = await count_events(db_url) - before
                if result["requests"] > args.lines:
                    sys.exit(f"wrk sent {result['requests']} webhooks but only {args.lines} distinct ones were "
                             "made: run again with a larger --lines")
                # Every answer was a 200 and each was a new row: the receiver stored what it acknowledged.
                assert result["non_2xx"] == 0 and stored >= result["requests"], (result, stored)
                result["stored"] = stored
        finally:
            await clean_redis(redis_url, queue, prefix)
    result.update(backend=kind, server=server, endpoint=factory)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each timed wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--lines", type=int, default=60_000, help="distinct signed webhooks made for a run")
    parser.add_argument("--warmup", type=int, default=3000, help="webhooks of the warm-up run")
    parser.add_argument("--warmup-seconds", type=float, default=2.0)
    parser.add_argument("--server", choices=SERVERS, action="append",
                        help="servers to compare (default: both)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], action="append",
                        help="default: postgresql when TEST_DATABASE_URL is set, else sqlite")
    parser.add_argument("--receiver-processes", type=int, default=1,
                        help="web processes serving the receiver on its port (the bare endpoint has one)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    wrk_binary()
    servers = args.server or list(SERVERS)
    backends = args.backend or (["postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"])
    redis = None if os.environ.get("REDIS_URL") else EmbeddedRedis().start()
    redis_url = os.environ.get("REDIS_URL") or redis.url  # type: ignore[union-attr]
    rows: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for kind in backends:
                for server in servers:
                    rows.append(await measure_one(kind, server, "bare", args, redis_url, Path(tmp)))
                for server in servers:
                    rows.append(await measure_one(kind, server, "receiver", args, redis_url, Path(tmp)))
    finally:
        if redis is not None:
            redis.close()
    ratios = {kind: ratio(rows, kind) for kind in backends}
    if args.json:
        print(json.dumps({"rows": rows, "ratios": ratios}, indent=2))
        return
    print(f"wrk, 1 thread, {args.connections} keep-alive connections, {args.seconds:g} s a run, "
          "distinct signed webhooks, one server process")
    print(f"{'backend':10} {'server':8} {'endpoint':9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for row in rows:
        print(f"{row['backend']:10} {row['server']:8} {row['endpoint']:9} {row['rps']:8.0f} "
              f"{row['p50_ms']:8.2f} {row['p99_ms']:8.2f}")
    for kind, value in ratios.items():
        print(f"{kind}: best receiver / best bare endpoint = {value:.2f}")


def ratio(rows: list[dict[str, Any]], kind: str) -> float:
    """The best receiver's rate over the best bare endpoint's, on that backend."""
    def best(endpoint: str) -> float:
        return max(row["rps"] for row in rows if row["backend"] == kind and row["endpoint"] == endpoint)
    return round(best("receiver") / best("bare"), 3)


if __name__ == "__main__":
    asyncio.run(main())
