"""`POST /v1/licenses/validate`, `/activate`, `/deactivate`: called by a customer's own app, so no
token; the licence key itself is the credential. Shapes and status codes follow Dodo's own
`/licenses/*` endpoints, so an app written for those works against these:

- validate `{license_key, license_key_instance_id?}` -> 200 `{"valid": bool, ...}` (an unknown key
  is just not valid);
- activate `{license_key, name}` -> 201 licence key instance; 403 key not active or expired,
  404 unknown key, 422 activation limit reached;
- deactivate `{license_key, license_key_instance_id}` -> 200; 403 instance not of this key,
  404 unknown key.

A malformed body is 422, as Dodo answers. Not rate-limited yet: a key has at least 128 random
bits, so guessing is hopeless, but a proxy in front should still limit requests per client.
"""

from __future__ import annotations

import json
from typing import Any

from litestar import Request, Response, post
from litestar.datastructures import State

from worker.entitlements.licenses import LicenseError, Licenses
from worker.web.responses import STORE_ERRORS, error, json_response

MAX_BODY_BYTES = 16 * 1024
MAX_FIELD_CHARS = 255


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


def _licenses(state: State) -> Licenses:
    return Licenses(state.runtime.db, state.catalog)


@post("/v1/licenses/validate", request_max_body_size=MAX_BODY_BYTES, exception_handlers=STORE_ERRORS)
async def validate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    try:
        body = await _body(request)
        key, instance = _field(body, "license_key"), _field(body, "license_key_instance_id", required=False)
    except BadRequest as exc:
        return error(422, str(exc))
    return json_response(await _licenses(state).validate(str(key), instance))


@post("/v1/licenses/activate", request_max_body_size=MAX_BODY_BYTES, exception_handlers=STORE_ERRORS)
async def activate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    try:
        body = await _body(request)
        key, name = _field(body, "license_key"), _field(body, "name")
    except BadRequest as exc:
        return error(422, str(exc))
    try:
        return json_response(await _licenses(state).activate(str(key), str(name)), status_code=201)
    except LicenseError as exc:
        return error(exc.status, exc.message)


@post("/v1/licenses/deactivate", request_max_body_size=MAX_BODY_BYTES, exception_handlers=STORE_ERRORS)
async def deactivate_license(request: Request[Any, Any, Any], state: State) -> Response[bytes]:
    try:
        body = await _body(request)
        key, instance = _field(body, "license_key"), _field(body, "license_key_instance_id")
    except BadRequest as exc:
        return error(422, str(exc))
    try:
        return json_response(await _licenses(state).deactivate(str(key), str(instance)))
    except LicenseError as exc:
        return error(exc.status, exc.message)


ROUTES = [validate_license, activate_license, deactivate_license]
