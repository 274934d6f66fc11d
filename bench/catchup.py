"""Benchmark: catching up. N paid orders arrive while the worker is down (through the real
receiver, which stores them and queues their jobs); then the worker starts. It reports the time
from the worker's start to the last of them `processed`, and the latency (POST to `processed`)
of fresh orders sent open loop at a steady rate meanwhile: what a customer who pays during a
catch-up waits.

    .venv/bin/python bench/catchup.py [--events 20000] [--rate 20] [--seconds 40] [--backend postgresql]

Real `dodo-worker web` (uvicorn, `create_app`) and `dodo-worker worker` processes with the
built-in entitlement handlers (`handlers.entitlements`). PostgreSQL as bench/worker.py finds it
(a database of its own, created and dropped); Redis is REDIS_URL (use a db number of your own)
or 127.0.0.1:6379, keys under a fresh queue name, deleted afterwards. Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import loadgen  # noqa: E402
from bench.receiver import serve  # noqa: E402
from bench.worker import (  # noqa: E402
    bench_settings,
    clean_redis,
    database,
    order_body,
    paced,
    percentile,
    processed_times,
    queue_patterns,
    worker_process,
    write_catalog,
)
from worker.signing import signed_headers  # noqa: E402


async def catchup(kind: str, redis_url: str, events: int, rate: float, seconds: float,
                  concurrency: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with database(kind, tmp) as db_url:
            settings = bench_settings(db_url, redis_url, write_catalog(Path(tmp)), concurrency)
            secret = settings.webhook_secrets[0]
            env = {"DODO_PAYMENTS_WEBHOOK_KEY": secret, "DATABASE_URL": db_url, "REDIS_URL": redis_url,
                   "QUEUE_NAME": settings.QUEUE_NAME, "HANDLER_MODULES": "handlers.entitlements",
                   "ENTITLEMENTS_FILE": str(settings.ENTITLEMENTS_FILE), "LOG_LEVEL": "WARNING",
                   "WORKER_CONCURRENCY": str(concurrency), "DODO_PAYMENTS_API_KEY": ""}
            prefix = f"bc{uuid.uuid4().hex[:8]}"
            backlog_ids = [f"{prefix}_{n}" for n in range(events)]
            try:
                with serve("uvicorn", "receiver", env) as port:
                    requests = []
                    for n, event_id in enumerate(backlog_ids):
                        body = order_body(n, prefix)
                        requests.append(loadgen.build_request("127.0.0.1", port, "/webhooks/dodo", body.encode(),
                                                              signed_headers(secret, body, event_id)))
                    stored = await loadgen.run("127.0.0.1", port, requests, 32)
                    assert stored.statuses == {200: events}, stored.statuses
                    load = os.getloadavg()[0]
                    started = time.time()
                    with worker_process(env):
                        fresh = await paced(port, secret, prefix + "f", rate, seconds)
                        backlog = await processed_times(db_url, backlog_ids, 900)
                        done = await processed_times(db_url, fresh.ids, 300)
            finally:
                await clean_redis(redis_url, [*queue_patterns(settings.QUEUE_NAME), f"arq:*{prefix}*"])
    assert fresh.statuses == {200: len(fresh.ids)}, fresh.statuses
    assert len(backlog) == events, f"{len(backlog)} of {events} backlog events processed"
    assert len(done) == len(fresh.ids), f"{len(done)} of {len(fresh.ids)} fresh events processed"
    drained = max(backlog.values())
    waits = {event_id: (done[event_id] - due) * 1000 for event_id, due in zip(fresh.ids, fresh.scheduled, strict=True)}
    during = [waits[i] for i, due in zip(fresh.ids, fresh.scheduled, strict=True) if due < drained]
    every = list(waits.values())
    return {"backend": kind, "events": events, "stored_per_s": round(stored.rps, 1),
            "drain_s": round(drained - started, 2), "drain_per_s": round(events / (drained - started), 1),
            "fresh_rate": rate, "fresh_sent": len(every), "fresh_during": len(during),
            "fresh_during_p50_ms": round(percentile(during, 50), 1) if during else None,
            "fresh_during_p99_ms": round(percentile(during, 99), 1) if during else None,
            "fresh_all_p99_ms": round(percentile(every, 99), 1),
            "fresh_ack_p99_ms": round(percentile(fresh.acks, 99) * 1000, 1), "load_at_start": round(load, 2)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20000, help="orders stored while the worker is down")
    parser.add_argument("--rate", type=float, default=20, help="fresh orders a second once the worker starts")
    parser.add_argument("--seconds", type=float, default=40, help="how long fresh orders are sent")
    parser.add_argument("--concurrency", type=int, default=None, help="WORKER_CONCURRENCY (default: the setting's)")
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from worker.settings import Settings

    concurrency = args.concurrency or Settings.model_fields["WORKER_CONCURRENCY"].default
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379"
    row = await catchup(args.backend, redis_url, args.events, args.rate, args.seconds, concurrency)
    if args.json:
        print(json.dumps(row, indent=2))
        return
    print(f"{row['events']} orders stored with the worker down ({row['stored_per_s']:.0f}/s through the receiver), "
          f"{row['backend']}; load average {row['load_at_start']}")
    print(f"drained {row['drain_s']} s after the worker's start ({row['drain_per_s']:.0f}/s)")
    print(f"fresh orders at {row['fresh_rate']:g}/s: {row['fresh_during']} sent during the catch-up, p50 "
          f"{row['fresh_during_p50_ms']} ms, p99 {row['fresh_during_p99_ms']} ms; all {row['fresh_sent']}: "
          f"p99 {row['fresh_all_p99_ms']} ms (answer p99 {row['fresh_ack_p99_ms']} ms)")


if __name__ == "__main__":
    asyncio.run(main())
