"""Benchmark: webhooks per second and p50/p99 acknowledgement latency of the real receiver
(signature check, inbox insert, enqueue) against a bare Litestar endpoint that only reads the
body, on granian and on uvicorn, in the same run, driven by wrk (compiled, one thread, so the
client costs little of the machine). Every request is a distinct signed event.

    .venv/bin/python bench/receiver.py [--seconds 10] [--connections 32] [--server granian] [--backend sqlite]
    .venv/bin/python bench/receiver.py --server uvicorn --profile receiver.raw   # py-spy, collapsed stacks

Needs wrk (`apt-get install -y wrk`). wrk's Lua cannot compute an HMAC, so the webhooks are
signed into a file first and bench/wrk_webhooks.lua sends them in turn. PostgreSQL (a database
of its own under TEST_DATABASE_URL's server) when TEST_DATABASE_URL is set, else SQLite; Redis
is REDIS_URL or an embedded server. Each server runs in its own process, one worker, like
`dodo-worker web`. It prints each server's ratio and the best receiver over the best bare
endpoint. Figures: docs/performance.md.
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
    serve.pid = process.pid  # type: ignore[attr-defined]
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


def write_webhooks(path: Path, secret: str, count: int, prefix: str) -> None:
    """`count` distinct signed payment.succeeded webhooks, one a line, for bench/wrk_webhooks.lua.
    Signed now: the receiver accepts a timestamp within 5 minutes, far more than a run takes."""
    sample = load_sample("payment.succeeded")
    with path.open("w") as out:
        for i in range(count):
            sample["data"]["payment_id"] = f"pay_{prefix}_{i}"
            body = json.dumps(sample, separators=(",", ":"))
            h = signed_headers(secret, body, f"{prefix}_{i}")
            out.write(f"{h['webhook-id']}\t{h['webhook-timestamp']}\t{h['webhook-signature']}\t{body}\n")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if found is None:
        sys.exit("bench/receiver.py drives the server with wrk: install it (Debian/Ubuntu: "
                 "`sudo apt-get install -y wrk`; macOS: `brew install wrk`) and run it again")
    return found


def run_wrk(port: int, lines: Path, seconds: float, connections: int) -> dict[str, Any]:
    """One wrk thread, `connections` keep-alive connections for `seconds`; wrk's summary."""
    command = [wrk_binary(), "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s",
               "-s", str(LUA), f"http://127.0.0.1:{port}/webhooks/dodo", "--", str(lines)]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = next(text for text in out.splitlines() if text.startswith("WRK "))
    result: dict[str, Any] = json.loads(line.removeprefix("WRK "))
    result["rps"] = round(result["requests"] / result["seconds"], 1)
    return result


async def measure(kind: str, server: str, factory: str, args: argparse.Namespace, redis_url: str,
                  tmp: Path) -> dict[str, Any]:
    """One endpoint on one server: a short warm-up, then the timed wrk run over distinct events."""
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
            with serve(server, factory, env) as port:
                run_wrk(port, warm, 1, args.connections)
                before = await count_events(db_url) if factory == "receiver" else 0
                if args.profile and factory == "receiver":
                    spy = subprocess.Popen([str(Path(sys.executable).parent / "py-spy"), "record", "-o", args.profile,
                                            "-f", "raw", "--subprocesses", "-d", str(int(args.seconds)), "-r", "200",
                                            "--pid", str(serve.pid)])  # type: ignore[attr-defined]
                result = run_wrk(port, timed, args.seconds, args.connections)
                if args.profile and factory == "receiver":
                    spy.wait()
            if factory == "receiver":
                stored = await count_events(db_url) - before
                if result["requests"] > args.lines:
                    sys.exit(f"wrk sent {result['requests']} webhooks, more than the {args.lines} distinct "
                             "ones made: run again with a larger --lines")
                # Every answer a 200, each a new row: the receiver stored what it acknowledged (and
                # up to one more a connection: requests in flight when wrk stopped are not counted).
                assert result["non_2xx"] == 0 and result["socket_errors"] == 0, result
                assert result["requests"] <= stored <= result["requests"] + args.connections, (result, stored)
                result["stored"] = stored
        finally:
            await clean_redis(redis_url, queue, prefix)
    result.update(backend=kind, server=server, endpoint=factory)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--lines", type=int, default=0, help="distinct webhooks made (default 5,000 a second)")
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--server", choices=SERVERS, action="append", help="default: both")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"],
                        help="default: postgresql when TEST_DATABASE_URL is set, else sqlite")
    parser.add_argument("--profile", help="py-spy raw (collapsed) profile of the receiver's process, to this file")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    args.lines = args.lines or int(5000 * args.seconds)
    servers = args.server or list(SERVERS)
    kind = args.backend or ("postgresql" if os.environ.get("TEST_DATABASE_URL") else "sqlite")
    wrk_binary()
    redis = None if os.environ.get("REDIS_URL") else EmbeddedRedis().start()
    redis_url = os.environ.get("REDIS_URL") or redis.url  # type: ignore[union-attr]
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for server in servers:
                for factory in ("bare", "receiver"):
                    rows.append(await measure(kind, server, factory, args, redis_url, Path(tmp)))
    finally:
        if redis is not None:
            redis.close()
    rate = {(r["server"], r["endpoint"]): r["rps"] for r in rows}
    best_bare = max(servers, key=lambda s: rate[(s, "bare")])
    best_receiver = max(servers, key=lambda s: rate[(s, "receiver")])
    ratio = rate[(best_receiver, "receiver")] / rate[(best_bare, "bare")]
    if args.json:
        print(json.dumps({"rows": rows, "best_bare": best_bare, "ratio": round(ratio, 3)}, indent=2))
        return
    print(f"wrk: 1 thread, {args.connections} connections, {args.seconds:g} s each, distinct signed webhooks "
          f"({kind}), one server process, load average {os.getloadavg()[0]:.2f}")
    print(f"{'server':8} {'endpoint':9} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(f"{r['server']:8} {r['endpoint']:9} {r['rps']:8.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f}")
    for server in servers:
        print(f"{server:8} receiver / same server's bare: {rate[(server, 'receiver')] / rate[(server, 'bare')]:.2f}")
    print(f"best receiver ({best_receiver}) / best bare ({best_bare}): {ratio:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
