"""A licence flood from its own process (so the test's event loop only times webhooks):
`python -m tests.faults.flood BASE_URL SECONDS CONCURRENCY RATE` runs CONCURRENCY callers for
SECONDS, each sending `validate` calls with random keys, RATE a second at most (no pause after
a slow answer: a caller whose answer took over 1/RATE s sends again at once), most from
distinct addresses (X-Forwarded-For, the web process trusting 127.0.0.1) and one in ten from a
single guesser; prints one JSON line:
`{"statuses": {code: n}, "not_busy_503": n, "no_retry_after": n, "single": {code: n}, "cpu_seconds": s}`
(its own CPU time: on a small machine the flood competes with the web process for the cores).

It speaks HTTP/1.1 over plain asyncio streams (keep-alive, one connection per caller): an HTTP
client library would spend more CPU than the web process it floods, on the same cores."""

from __future__ import annotations

import asyncio
import json
import resource
import secrets
import sys
import time
from collections import Counter
from urllib.parse import urlsplit


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str,
                address: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"license_key": secrets.token_hex(16)}).encode()
    writer.write(b"POST /v1/licenses/validate HTTP/1.1\r\nHost: " + host.encode()
                 + b"\r\nContent-Type: application/json\r\nX-Forwarded-For: " + address.encode()
                 + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    content = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, content


async def flood(base_url: str, seconds: float, concurrency: int, rate: float) -> dict[str, object]:
    url = urlsplit(base_url)
    statuses: Counter[int] = Counter()
    single: Counter[int] = Counter()
    counts = Counter[str]()
    deadline = time.monotonic() + seconds

    async def caller(n: int) -> None:
        round_ = 0
        reader = writer = None
        await asyncio.sleep(n / concurrency / rate)  # spread the callers over one period
        while time.monotonic() < deadline:
            started = time.monotonic()
            round_ += 1
            guesser = n % 10 == 0
            address = "198.51.100.7" if guesser else f"10.{n % 250}.{round_ % 250}.{n // 250 + 1}"
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(url.hostname, url.port)
                status, headers, content = await _call(reader, writer, url.netloc, address)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                statuses[0] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                continue
            statuses[status] += 1
            if guesser:
                single[status] += 1
            if status in (429, 503) and "retry-after" not in headers:
                counts["no_retry_after"] += 1
            if status == 503 and json.loads(content).get("code") != "BUSY":
                counts["not_busy_503"] += 1  # a pool timeout (STORE_UNAVAILABLE), not the fast refusal
            if headers.get("connection") == "close":
                writer.close()
                reader = writer = None
            await asyncio.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
        if writer is not None:
            writer.close()

    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    return {"statuses": dict(statuses), "not_busy_503": counts["not_busy_503"],
            "no_retry_after": counts["no_retry_after"], "single": dict(single),
            "cpu_seconds": round(resource.getrusage(resource.RUSAGE_SELF).ru_utime
                                 + resource.getrusage(resource.RUSAGE_SELF).ru_stime, 2)}


if __name__ == "__main__":
    base, seconds, concurrency, rate = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
    print(json.dumps(asyncio.run(flood(base, seconds, concurrency, rate))))
