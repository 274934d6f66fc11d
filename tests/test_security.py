"""Security properties of the receiver, settings and CLI (see SECURITY.md): request size and time
limits, and secrets that never show up in answers or error messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.support import Stack, free_port, sample_envelope, serving, wait_until
from worker.jobs import build_worker
from worker.settings import ConfigError, load_settings
from worker.signing import generate_secret, new_message_id, signed_headers

SECRET_WORD = "hunter2hunter2"


async def raw_exchange(stack: Stack, head: bytes, body: bytes = b"", wait: float = 5.0) -> tuple[int, bytes, float]:
    """Send `head` and `body` on a raw connection, then keep quiet; the status, body and seconds
    until the server answered."""
    parts = urlsplit(stack.base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    started = time.monotonic()
    try:
        writer.write(head + body)
        await writer.drain()
        response = await asyncio.wait_for(reader.read(65536), wait)
    finally:
        writer.close()
    status = int(response.split(b" ", 2)[1])
    return status, response.split(b"\r\n\r\n", 1)[1], time.monotonic() - started


def request_head(stack: Stack, headers: dict[str, str], content_length: int) -> bytes:
    lines = ["POST /webhooks/dodo HTTP/1.1", f"Host: {urlsplit(stack.base_url).netloc}",
             f"Content-Length: {content_length}", "Content-Type: application/json"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def test_a_body_that_trickles_in_is_cut_off_with_408_and_nothing_is_stored(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, WEBHOOK_READ_TIMEOUT_SECONDS=0.5)
    body = b'{"type": "payment.succeeded", "data": {}}'
    headers = signed_headers(stack.secret, body)
    head = request_head(stack, headers, len(body) + 1000)  # promises more than it will ever send

    status, answer, seconds = await raw_exchange(stack, head, body)

    assert status == 408
    assert b"0.5s" in answer
    assert seconds < 3
    assert await stack.event(headers["webhook-id"]) is None
    _, response = await stack.send("payment.succeeded")  # the receiver is still fine
    assert response.status_code == 200


async def test_a_declared_oversized_body_is_refused_before_it_is_sent(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False, WEBHOOK_MAX_BYTES=4096)
    head = request_head(stack, signed_headers(stack.secret, b"{}"), 50 * 1024 * 1024)

    status, answer, seconds = await raw_exchange(stack, head)  # not one byte of the 50 MiB

    assert status == 413
    assert b"4096" in answer
    assert seconds < 3


async def test_refusals_never_echo_the_webhook_secret(stack_factory: Any) -> None:
    stack = await stack_factory(worker=False)
    other = generate_secret()
    body = '{"type": "payment.succeeded", "data": {}}'
    for headers in (signed_headers(other, body), {"webhook-id": new_message_id()},
                    {**signed_headers(other, body), "webhook-timestamp": "0"}):
        response = await stack.post(body, headers)
        assert response.status_code == 401
        for secret in (stack.secret, other):
            assert secret not in response.text
            assert secret.removeprefix("whsec_") not in response.text


async def test_ready_names_the_failed_part_but_not_the_database_url(stack_factory: Any, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("one backend is enough: the database is unreachable either way")
    url = f"postgresql+asyncpg://dodo:{SECRET_WORD}@127.0.0.1:1/dodo"
    stack = await stack_factory(worker=False, DATABASE_URL=url)

    response = await stack.http.get(f"{stack.base_url}/ready")

    assert response.status_code == 503
    assert response.json()["sql"] == "unavailable"
    assert SECRET_WORD not in response.text and "127.0.0.1:1" not in response.text


def test_settings_errors_do_not_echo_secret_values() -> None:
    for name in ("DODO_PAYMENTS_WEBHOOK_KEY", "HOOKS_SIGNING_KEY"):
        with pytest.raises(ConfigError) as caught:
            load_settings(**{name: f"whsec_{SECRET_WORD}!!"})
        assert name in str(caught.value)
        assert SECRET_WORD not in str(caught.value)
        assert SECRET_WORD not in repr(caught.value.__cause__ or caught.value.__context__ or "")


def test_settings_repr_hides_secrets() -> None:
    settings = load_settings(DODO_PAYMENTS_WEBHOOK_KEY=generate_secret(), DODO_PAYMENTS_API_KEY=SECRET_WORD,
                             WORKER_API_TOKEN=SECRET_WORD, DOWNLOAD_SIGNING_KEY=SECRET_WORD)
    assert SECRET_WORD not in repr(settings) and SECRET_WORD not in str(settings.model_dump())


async def test_cli_configuration_errors_do_not_echo_secret_values(stack_factory: Any) -> None:
    stack = await stack_factory(web=False, worker=False)
    code, out, err = await stack.cli("events", "list", env={"DODO_PAYMENTS_WEBHOOK_KEY": f"whsec_{SECRET_WORD}!"})
    assert code == 2
    assert "DODO_PAYMENTS_WEBHOOK_KEY" in err
    assert SECRET_WORD not in out + err


async def test_the_worker_asks_redis_often_enough_for_low_latency(stack_factory: Any) -> None:
    """arq's own poll interval (0.5 s) would add up to half a second to every event."""
    stack = await stack_factory(web=False, worker=False)
    worker = build_worker(stack.settings, stack.registry, load_modules=False)
    assert worker.poll_delay_s == stack.settings.WORKER_POLL_SECONDS <= 0.1


async def test_an_event_is_processed_soon_after_arrival_with_default_poll(stack_factory: Any, registry: Any) -> None:
    @registry.on("payment.succeeded")
    async def handle(event, ctx) -> None:  # type: ignore[no-untyped-def]
        return None

    stack = await stack_factory(worker=False)
    await stack.start_worker(poll_delay=stack.settings.WORKER_POLL_SECONDS)  # as `dodo-worker worker` runs
    event_id, response = await stack.send("payment.succeeded", sample_envelope("payment.succeeded")["data"])
    assert response.status_code == 200
    row = await stack.wait_status(event_id, "processed")
    assert row.processed_at is not None
    assert (row.processed_at - row.received_at).total_seconds() < 1.0


def test_debug_logging_keeps_http_and_s3_libraries_quiet() -> None:
    """At LOG_LEVEL=DEBUG botocore would log presigned download URLs, httpx every request URL."""
    import logging

    from worker.logs import configure_logging

    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.DEBUG)  # what basicConfig(level=DEBUG) does outside pytest
    try:
        configure_logging("DEBUG")
        for name in ("botocore", "botocore.auth", "boto3", "httpx", "httpcore"):
            assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert logging.getLogger("dodo_worker.events").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(before)


def test_several_hooks_signing_keys_are_refused_at_start_not_at_delivery() -> None:
    """Unlike the webhook key, HOOKS_SIGNING_KEY signs: a comma-separated pair would sign every
    hook with a garbled key, so it is refused with a line that names the setting, not its value."""
    first, second = generate_secret(), generate_secret()
    with pytest.raises(ConfigError) as caught:
        load_settings(HOOKS_SIGNING_KEY=f"{first},{second}")
    assert "HOOKS_SIGNING_KEY" in str(caught.value) and "one secret" in str(caught.value)
    assert first not in str(caught.value) and second not in str(caught.value)

    padded = load_settings(HOOKS_SIGNING_KEY=f" {first}\n").HOOKS_SIGNING_KEY
    assert padded is not None and padded.get_secret_value() == first  # signs with the real key


async def test_a_token_with_a_trailing_newline_still_opens_the_read_api(stack_factory: Any) -> None:
    """WORKER_API_TOKEN read from a file often ends in a newline; clients send the bare token."""
    stack = await stack_factory(worker=False, WORKER_API_TOKEN=f"{SECRET_WORD}\n")
    url = f"{stack.base_url}/v1/entitlements"
    good = await stack.http.get(url, params={"customer_id": "cus_x"},
                                headers={"Authorization": f"Bearer {SECRET_WORD}"})
    assert good.status_code == 200, good.text
    bad = await stack.http.get(url, params={"customer_id": "cus_x"},
                               headers={"Authorization": f"Bearer {SECRET_WORD}x"})
    assert bad.status_code == 401 and SECRET_WORD not in bad.text


@contextlib.asynccontextmanager
async def served_as_web_runs_it(stack: Stack) -> AsyncIterator[str]:
    """The app under uvicorn with the options `dodo-worker web` uses (worker/cli/serve.py)."""
    from worker.cli.serve import server_config
    from worker.web.app import create_app

    config = server_config(create_app(stack.settings, stack.registry), stack.settings, "127.0.0.1", free_port())
    async with serving(config) as url:
        yield url


async def closed_by_server(reader: asyncio.StreamReader, within: float) -> bytes:
    """What the server sent before closing the connection (b"" when it sent nothing)."""
    return await asyncio.wait_for(reader.read(65536), within)


async def test_request_headers_that_never_end_are_cut_off(stack_factory: Any) -> None:
    """Slowloris: uvicorn alone has no deadline for headers; `web` closes such connections."""
    stack = await stack_factory(web=False, worker=False, HTTP_HEADER_TIMEOUT_SECONDS=0.5,
                                WEBHOOK_READ_TIMEOUT_SECONDS=3)
    async with served_as_web_runs_it(stack) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /webhooks/dodo HTTP/1.1\r\nHost: x\r\n")  # and then nothing
        started = time.monotonic()
        assert await closed_by_server(reader, 5) == b""
        assert time.monotonic() - started < 3
        writer.close()

        # A keep-alive connection: the first request is answered, a second that stalls is cut off.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
        await reader.readexactly(len(b'{"status":"ok"}'))
        writer.write(b"GET /health HTTP/1.1\r\n")
        assert await closed_by_server(reader, 5) == b""
        writer.close()

        # Complete headers end the header deadline: a slow body meets the body deadline (408).
        body = b'{"type": "payment.succeeded"}'
        head = (f"POST /webhooks/dodo HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body) + 10}\r\n"
                "\r\n").encode()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head + body)
        answer = await closed_by_server(reader, 10)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        writer.close()

        async with httpx.AsyncClient() as http:  # and ordinary requests are unaffected
            assert (await http.get(f"{base_url}/health")).status_code == 200


class _Planted:
    """Unpickling this would create a file: what an attacker with write access to Redis plants."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


async def test_a_pickled_job_planted_in_redis_runs_no_code(stack_factory: Any, registry: Any,
                                                           tmp_path: Any) -> None:
    """Jobs are JSON: a pickle put on the queue by someone who can write to Redis is refused by the
    worker, and the queue keeps flowing."""
    import pickle

    from redis.asyncio import Redis

    from worker import queue

    @registry.on("payment.succeeded")
    async def paid(event: Any, ctx: Any) -> None:
        return None

    marker = tmp_path / "pwned"
    stack = await stack_factory(worker=False)
    planted_id = queue.job_id(stack.settings.QUEUE_NAME, "planted")
    client = Redis.from_url(stack.settings.REDIS_URL or "")
    try:
        job = {"t": 1, "f": queue.PROCESS_EVENT, "a": [_Planted(str(marker))], "k": {}, "et": 0}
        await client.psetex(f"arq:job:{planted_id}", 60_000, pickle.dumps(job))
        await client.zadd(stack.settings.QUEUE_NAME, {planted_id: 1})  # arq skips a score of 0
        await stack.start_worker()
        event_id, response = await stack.send("payment.succeeded")
        assert response.status_code == 200
        await stack.wait_status(event_id, "processed")

        async def planted_job_gone() -> bool:
            return await client.zscore(stack.settings.QUEUE_NAME, planted_id) is None

        await wait_until(planted_job_gone, what="the worker to drop the planted job")
        assert not marker.exists()
    finally:
        await client.delete(f"arq:job:{planted_id}")
        await client.aclose()
