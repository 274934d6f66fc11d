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

Not rate-limited yet: a key has at least 128 random bits, so guessing is hopeless, but a proxy in
front should still limit requests per client.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import SQLAlchemyError

from integrations.dodo import DodoLicenses, create_license_client
from worker.entitlements.licenses import DODO_UNAVAILABLE, INVALID_BODY, LicenseError, Licenses
from worker.web.responses import coded_error, json_response

MAX_BODY_BYTES = 16 * 1024
MAX_FIELD_CHARS = 255
DODO_LICENSES = "dodo_licenses"  # the runtime resource: one SDK client a process, closed with it
RETRY_AFTER = "5"  # seconds, on 503 DODO_UNAVAILABLE
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


async def _body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise BadRequest("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("the body is not a JSON object")
    return body


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
    """Read the body's fields (422 when malformed) and `run(*fields)`, a refusal in Dodo's shape."""
    try:
        body = await _body(request)
        fields = [_field(body, name) for name in required]
        if optional is not None:
            fields.append(_field(body, optional, required=False))
    except BadRequest as exc:
        return refusal(LicenseError(422, INVALID_BODY, str(exc)))
    try:
        return await run(*fields)
    except LicenseError as exc:
        return refusal(exc)


@post("/v1/licenses/validate", request_max_body_size=MAX_BODY_BYTES, exception_handlers=LICENSE_ERRORS)
async def validate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    async def run(key: str, instance: str | None) -> Response[bytes]:
        return json_response(await _licenses(state).validate(key, instance))

    return await _answer(request, ("license_key",), "license_key_instance_id", run)


@post("/v1/licenses/activate", request_max_body_size=MAX_BODY_BYTES, exception_handlers=LICENSE_ERRORS)
async def activate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    async def run(key: str, name: str) -> Response[bytes]:
        return json_response(await _licenses(state).activate(key, name), status_code=201)

    return await _answer(request, ("license_key", "name"), None, run)


@post("/v1/licenses/deactivate", request_max_body_size=MAX_BODY_BYTES, exception_handlers=LICENSE_ERRORS)
async def deactivate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    async def run(key: str, instance: str) -> Response[bytes]:
        await _licenses(state).deactivate(key, instance)
        return Response(content=b"", status_code=200, media_type="text/plain")  # Dodo's: 200, no body

    return await _answer(request, ("license_key", "license_key_instance_id"), None, run)


ROUTES = [validate_license, activate_license, deactivate_license]
