"""Bearer-token check of the /v1 read API (WORKER_API_TOKEN), in constant time."""

from __future__ import annotations

import hmac

from litestar import Request, Response

from worker.settings import Settings
from worker.web.responses import json_response


def check_bearer(request: Request, settings: Settings) -> Response[bytes] | None:
    """None when the request carries the right token; else the 503 or 401 answer to send."""
    if settings.WORKER_API_TOKEN is None:
        return json_response({"error": "the read API is disabled: WORKER_API_TOKEN is not set"}, 503)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = settings.WORKER_API_TOKEN.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        return json_response({"error": "missing or wrong bearer token"}, 401,
                             headers={"WWW-Authenticate": 'Bearer realm="dodo-worker"'})
    return None
