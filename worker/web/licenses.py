"""`POST /v1/licenses/validate`, `/activate`, `/deactivate`: called by a customer's own app, so no
token; the licence key itself is the credential. Shapes and status codes follow Dodo's own
`/licenses/*` endpoints, so an app written for those works against these:

- validate `{license_key, license_key_instance_id?}` -> 200 `{"valid": bool, "status", "product_id",
  "expires_at", "activations_limit", "activations", "source"}` (an unknown key is just not valid).
  `source` is `"dodo"` when Dodo answered for a key it issued, `"local"` otherwise; when Dodo could
  not be reached the answer is the last known local state with `"dodo_unreachable": true`;
- activate `{license_key, name}` -> 201 licence key instance (`customer.name`/`email` null when
  unknown, never ""); 403 key not active or expired, 404 unknown key, 422 activation limit reached;
- deactivate `{license_key, license_key_instance_id}` -> 200 with an empty body, as Dodo answers;
  403 instance not of this key, 404 unknown key. Deactivating twice is not an error.

Refusals are Dodo's `{"code": "...", "message": "..."}` plus `"error"` (the same message, for
older clients): 404 NOT_FOUND, 403 INACTIVE_LICENSE_KEY, 422 LICENSE_KEY_LIMIT_REACHED, 403
LICENSE_KEY_NOT_FOUND (instance), 422 INVALID_REQUEST_BODY (malformed body, as Dodo answers),
and ours where Dodo has none: 413 PAYLOAD_TOO_LARGE, 503 STORE_UNAVAILABLE, 503 DODO_UNAVAILABLE
(a Dodo-issued key's activate or deactivate while Dodo cannot be reached; `Retry-After` set).
For a Dodo-issued key, Dodo's own refusal is passed on with its status, code and message.
(worker/entitlements/licenses.py says which keys go to Dodo and why.)

Hostile callers (docs/licenses.md "Limits"): a body is read at most 16 KiB and nested at most
`MAX_DEPTH` levels (413 PAYLOAD_TOO_LARGE, 422 INVALID_REQUEST_BODY, never a 500); each client
address (TRUSTED_PROXIES says whose X-Forwarded-For is believed) and each licence key gets
LICENSE_RATE_PER_MINUTE / LICENSE_KEY_RATE_PER_MINUTE requests a minute across every web process
(429 RATE_LIMITED with `Retry-After`); and at most LICENSE_CONCURRENCY requests of one process
use the database at once, one waiting at most LICENSE_QUEUE_SECONDS for a turn (503 BUSY with
`Retry-After` after that), so a flood never takes the connections the webhook receiver needs.
Before all of that, one process takes on at most LICENSE_PROCESS_RATE_PER_SECOND licence requests
a second and answers the rest 503 BUSY at once from memory, in an ASGI middleware of the routes
(`shed_past_budget`), before Litestar builds a request, reads the body or asks Redis: a flood then
costs the process (and the webhooks it shares its CPU with) little more than parsing and answering.
Each such refusal counts in `dodo_license_requests_refused_total{reason}` and is logged, at
most 20 lines a minute.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec
from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.types import (
    ASGIApp,
    ExceptionHandlersMap,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    Scope,
    Send,
)
from sqlalchemy.exc import SQLAlchemyError

from integrations.dodo import DodoLicenses, create_license_client
from worker.entitlements.keys import normalise
from worker.entitlements.licenses import DODO_UNAVAILABLE, INVALID_BODY, LicenseError, Licenses
from worker.runtime import Runtime
from worker.web.bodies import BodyError, read_json_object
from worker.web.clients import client_address
from worker.web.ratelimit import RateLimiter, TokenBucket
from worker.web.refusals import RateLimitedLog, printable
from worker.web.responses import coded_error, json_response

MAX_BODY_BYTES = 16 * 1024
MAX_FIELD_CHARS = 255
DODO_LICENSES = "dodo_licenses"  # the runtime resource: one SDK client a process, closed with it
RETRY_AFTER = "5"  # seconds, on 503 DODO_UNAVAILABLE
BUSY_RETRY_AFTER = "1"  # seconds, on 503 BUSY (every database slot of the licence routes taken)
MAX_DEPTH = 4  # the bodies are flat objects
QUEUE_PER_SLOT = 4  # past LICENSE_CONCURRENCY * this many requests in flight, 503 at once
REFUSED_METRIC = "dodo_license_requests_refused_total"
BUSY_MESSAGE = "too many licence requests at once, retry shortly"
BUSY_BODY = msgspec.json.encode({"code": "BUSY", "message": BUSY_MESSAGE, "error": BUSY_MESSAGE})
BUSY_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BUSY_BODY)).encode()),
                (b"retry-after", BUSY_RETRY_AFTER.encode())]
log = logging.getLogger("dodo_worker.web")


class BadRequest(Exception):
    pass


def _field(body: dict[str, Any], name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise BadRequest(f"{name} must be a non-empty string")
    if len(value) > MAX_FIELD_CHARS:
        raise BadRequest(f"{name} is longer than {MAX_FIELD_CHARS} characters")
    return value.strip()


class _RefusalLog(RateLimitedLog):
    what = "licence request refusal"
    logger = logging.getLogger("dodo_worker.licenses")

    def refused(self, status: int, reason: str, client: str) -> None:
        if self.admit():
            self.logger.warning("licence request refused: %s %s (from %s)", status, reason, printable(client, 64))


class _Guard:
    """What stands between a flood and the store, one per app (tests run several in a process)."""

    def __init__(self, runtime: Runtime) -> None:
        self.settings = runtime.settings
        self.metrics = runtime.metrics
        self.limiter = RateLimiter(runtime.redis, f"{runtime.settings.QUEUE_NAME}:licence-rate")
        self.budget = TokenBucket(runtime.settings.LICENSE_PROCESS_RATE_PER_SECOND)
        self.slots = asyncio.Semaphore(runtime.settings.LICENSE_CONCURRENCY)
        self.in_flight = 0
        self.max_in_flight = runtime.settings.LICENSE_CONCURRENCY * (1 + QUEUE_PER_SLOT)
        self.log = _RefusalLog()

    def refuse(self, client: str, status: int, code: str, reason: str, message: str,
               headers: dict[str, str] | None = None) -> Response[bytes]:
        self.metrics.inc(REFUSED_METRIC, reason=reason)
        self.log.refused(status, reason, client)
        return coded_error(status, code, message, headers)

    def busy(self, client: str, reason: str = "busy") -> Response[bytes]:
        return self.refuse(client, 503, "BUSY", reason, BUSY_MESSAGE, {"Retry-After": BUSY_RETRY_AFTER})

    def too_many(self, client: str, reason: str, retry_after: int) -> Response[bytes]:
        return self.refuse(client, 429, "RATE_LIMITED", reason, f"too many requests, retry in {retry_after}s",
                           {"Retry-After": str(retry_after)})


def _guard(state: State) -> _Guard:
    guard: _Guard | None = state.get("license_guard")
    if guard is None:
        guard = state["license_guard"] = _Guard(state.runtime)
    return guard


def refusal(exc: LicenseError) -> Response[bytes]:
    headers = {"Retry-After": RETRY_AFTER} if exc.code == DODO_UNAVAILABLE else None
    return coded_error(exc.status, exc.code, exc.message, headers)


def _store_unavailable(_request: Any, exc: Exception) -> Response[bytes]:
    """SQL unreachable is a 503 (retry later), never a 500 with details."""
    log.warning("store unavailable: %s", type(exc).__name__)
    return coded_error(503, "STORE_UNAVAILABLE", "store unavailable")


def _http_error(_request: Any, exc: HTTPException) -> Response[bytes]:
    code = {413: "PAYLOAD_TOO_LARGE"}.get(exc.status_code, "INVALID_REQUEST")
    return coded_error(exc.status_code, code, str(exc.detail))


LICENSE_ERRORS: ExceptionHandlersMap = {SQLAlchemyError: _store_unavailable, OSError: _store_unavailable,
                                        HTTPException: _http_error}


def _licenses(state: State) -> Licenses:
    runtime = state.runtime
    dodo = runtime.resources.get(DODO_LICENSES)
    if dodo is None:  # made on first use; Runtime.close() closes it
        dodo = runtime.resources[DODO_LICENSES] = DodoLicenses(create_license_client(runtime.settings))
    return Licenses(runtime.db, state.catalog, dodo)


async def _answer(request: Request[Any, Any, Any], required: tuple[str, ...], optional: str | None,
                  run: Callable[..., Awaitable[Response[bytes]]]) -> Response[bytes]:
    """Limit the client, read the body's fields (422 when malformed), limit the key, wait for a
    database slot, and `run(*fields)`; every refusal in Dodo's shape."""
    guard = _guard(request.app.state)
    settings = guard.settings
    client = client_address(request, settings.trusted_proxies)
    if guard.in_flight >= guard.max_in_flight:  # shed at once: no Redis, no body, no waiting
        return guard.busy(client)
    guard.in_flight += 1
    try:
        return await _limited(request, guard, client, required, optional, run)
    finally:
        guard.in_flight -= 1


async def _limited(request: Request[Any, Any, Any], guard: _Guard, client: str, required: tuple[str, ...],
                   optional: str | None, run: Callable[..., Awaitable[Response[bytes]]]) -> Response[bytes]:
    settings = guard.settings
    wait = await guard.limiter.retry_after("client", client, settings.LICENSE_RATE_PER_MINUTE)
    if wait is not None:
        return guard.too_many(client, "client_rate", wait)
    try:
        body = await read_json_object(request, MAX_BODY_BYTES, MAX_DEPTH)
        fields = [_field(body, name) for name in required]
        if optional is not None:
            fields.append(_field(body, optional, required=False))
    except BodyError as exc:
        code = "PAYLOAD_TOO_LARGE" if exc.status == 413 else INVALID_BODY
        return guard.refuse(client, exc.status, code, exc.reason, exc.message)
    except BadRequest as exc:
        return guard.refuse(client, 422, INVALID_BODY, "malformed", str(exc))
    wait = await guard.limiter.retry_after("key", normalise(str(fields[0])), settings.LICENSE_KEY_RATE_PER_MINUTE)
    if wait is not None:
        return guard.too_many(client, "key_rate", wait)
    try:
        async with asyncio.timeout(settings.LICENSE_QUEUE_SECONDS):
            await guard.slots.acquire()
    except TimeoutError:
        return guard.busy(client)
    try:
        return await run(*fields)
    except LicenseError as exc:
        return refusal(exc)
    finally:
        guard.slots.release()


def shed_past_budget(app: ASGIApp) -> ASGIApp:
    """Route middleware: past LICENSE_PROCESS_RATE_PER_SECOND, 503 BUSY from prepared bytes."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        guard = _guard(scope["app"].state)
        if guard.budget.take():
            await app(scope, receive, send)
            return
        guard.metrics.inc(REFUSED_METRIC, reason="process_rate")
        guard.log.refused(503, "process_rate", (scope.get("client") or ("",))[0])
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": 503, "headers": BUSY_HEADERS}
        await send(start)
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "body": BUSY_BODY, "more_body": False}
        await send(body)

    return middleware


ROUTE_OPTIONS: dict[str, Any] = {"request_max_body_size": MAX_BODY_BYTES, "exception_handlers": LICENSE_ERRORS,
                                 "middleware": [shed_past_budget]}


@post("/v1/licenses/validate", **ROUTE_OPTIONS)
async def validate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    async def run(key: str, instance: str | None) -> Response[bytes]:
        return json_response(await _licenses(state).validate(key, instance))

    return await _answer(request, ("license_key",), "license_key_instance_id", run)


@post("/v1/licenses/activate", **ROUTE_OPTIONS)
async def activate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    async def run(key: str, name: str) -> Response[bytes]:
        return json_response(await _licenses(state).activate(key, name), status_code=201)

    return await _answer(request, ("license_key", "name"), None, run)


@post("/v1/licenses/deactivate", **ROUTE_OPTIONS)
async def deactivate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    async def run(key: str, instance: str) -> Response[bytes]:
        await _licenses(state).deactivate(key, instance)
        return Response(content=b"", status_code=200, media_type="text/plain")  # Dodo's: 200, no body

    return await _answer(request, ("license_key", "license_key_instance_id"), None, run)


ROUTES = [validate_license, activate_license, deactivate_license]
