"""`POST /webhooks/dodo`: verify, store, enqueue, answer, in that order.

A 200 means the event is durable in SQL (see inbox_writer.py for how concurrent webhooks share
one INSERT). Redis is only the delivery mechanism: when it is
down we still answer 200 and the sweeper enqueues the event later.

What is stored: every correctly signed body that is JSON (UTF-8, nested at most `MAX_DEPTH`
levels) with a non-empty string `type`, whatever else it holds. Anything else is refused with a
4xx, a `{"error": ...}` body, a warning in the log and `dodo_webhooks_rejected_total{reason}`,
and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from sqlalchemy.exc import SQLAlchemyError

from worker import alerts
from worker.events import object_id
from worker.runtime import Runtime
from worker.store.database import is_missing_table
from worker.store.inbox import NewEvent
from worker.verify import SignatureError, Verifier
from worker.web.bodies import BodyTooLarge, may_nest_deeper, nesting_depth, read_body
from worker.web.inbox_writer import InboxWriter
from worker.web.refusals import RefusalLog
from worker.web.responses import error, json_response

log = logging.getLogger("dodo_worker.receiver")

ACCEPTED = msgspec.json.encode({"status": "accepted"})
DUPLICATE = msgspec.json.encode({"status": "duplicate"})
MAX_ID_LENGTH = 255


def _refusals(state: State) -> RefusalLog:
    """One rate-limited refusal log per app (tests run several apps in one process)."""
    refusals: RefusalLog | None = state.get("refusals")
    if refusals is None:
        refusals = state["refusals"] = RefusalLog()
    return refusals
# Deeper bodies are refused (400) rather than handed to parsers whose recursion limits differ
# (msgspec and json stop near 1,000 minus the caller's stack). serde_json's default is 128 too;
# Dodo's payloads nest fewer than 10 levels.
MAX_DEPTH = 128
TOO_DEEP = object()


def _may_nest_deeper(body: bytes) -> bool:
    return may_nest_deeper(body, MAX_DEPTH)


def _reject(request: Request, runtime: Runtime, status: int, reason: str, message: str) -> Response[bytes]:
    runtime.metrics.inc("dodo_webhooks_rejected_total", reason=reason)
    alerts.webhook_refused(runtime, reason)
    client = request.client.host if request.client else None
    _refusals(request.app.state).refused(status, reason, message, request.headers.get("webhook-id"), client)
    return error(status, message)


def _ok(body: bytes) -> Response[bytes]:
    return Response(content=body, status_code=200, media_type="application/json")


@post("/webhooks/dodo", status_code=200)
async def receive_webhook(request: Request, state: State) -> Response[bytes]:
    runtime: Runtime = state.runtime
    verifier: Verifier = state.verifier
    limit = runtime.settings.WEBHOOK_MAX_BYTES
    read_seconds = runtime.settings.WEBHOOK_READ_TIMEOUT_SECONDS
    try:
        async with asyncio.timeout(read_seconds):
            body = await read_body(request, limit)
    except BodyTooLarge:
        return _reject(request, runtime, 413, "too_large", f"body is larger than {limit} bytes")
    except TimeoutError:
        return _reject(request, runtime, 408, "slow_body", f"body not received within {read_seconds:g}s")

    try:
        verifier.verify(body, request.headers)
    except SignatureError as exc:
        return _reject(request, runtime, 401, exc.reason, exc.detail)

    try:
        envelope = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return _reject(request, runtime, 400, "malformed", "body is not JSON (UTF-8)")
    except RecursionError:
        envelope = TOO_DEEP
    if envelope is TOO_DEEP or (_may_nest_deeper(body) and nesting_depth(envelope, MAX_DEPTH) > MAX_DEPTH):
        return _reject(request, runtime, 400, "too_deep", f"body is nested more than {MAX_DEPTH} levels deep")
    event_type = envelope.get("type") if isinstance(envelope, dict) else None
    if not isinstance(event_type, str) or not event_type.strip():
        return _reject(request, runtime, 400, "malformed", "body has no 'type'")
    event_id = request.headers["webhook-id"]
    if len(event_id) > MAX_ID_LENGTH:
        return _reject(request, runtime, 400, "malformed", f"webhook-id is longer than {MAX_ID_LENGTH}")

    business_id = envelope.get("business_id")
    occurred_at = envelope.get("timestamp")
    new_event = NewEvent(
        id=event_id,
        type=event_type,
        body=body.decode("utf-8"),
        object_id=object_id(event_type, envelope.get("data")),
        business_id=business_id if isinstance(business_id, str) else None,
        occurred_at=occurred_at if isinstance(occurred_at, str) else None,
    )
    writer: InboxWriter = state.inbox_writer
    try:
        inserted = await writer.submit(new_event)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        if is_missing_table(exc):  # dropped while running (web does not start without them)
            log.error("the store has no tables, answering 503 so Dodo retries: run `dodo-worker db upgrade`")
            return _reject(request, runtime, 503, "store_unavailable", "store has no tables, retry later")
        log.error("store unavailable, answering 503 so Dodo retries: %s", type(exc).__name__)
        return _reject(request, runtime, 503, "store_unavailable", "store unavailable, retry later")

    if not inserted:
        runtime.metrics.inc("dodo_webhooks_received_total", result="duplicate")
        return _ok(DUPLICATE)
    runtime.metrics.inc("dodo_webhooks_received_total", result="accepted")
    return _ok(ACCEPTED)


__all__ = ["json_response", "receive_webhook"]
