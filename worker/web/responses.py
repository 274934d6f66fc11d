"""JSON responses shaped as the README documents: `{"status": ...}` or `{"error": ...}`; the licence
routes answer Dodo's `{"code": ..., "message": ...}` too (`coded_error`)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from litestar import Response
from litestar.types import ExceptionHandlersMap
from sqlalchemy.exc import SQLAlchemyError

_encoder = msgspec.json.Encoder()
log = logging.getLogger("dodo_worker.web")


def json_response(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=_encoder.encode(payload), status_code=status_code, media_type="application/json",
        headers=headers,
    )


def error(status_code: int, message: str, **extra: Any) -> Response[bytes]:
    return json_response({"error": message, **extra}, status_code)


def coded_error(status_code: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response[bytes]:
    """Dodo's error shape `{"code": "NOT_FOUND", "message": "..."}`, with `"error"` (the same
    message) beside them for clients of the `{"error": ...}` shape."""
    return json_response({"code": code, "message": message, "error": message}, status_code, headers)


def store_unavailable(_request: Any, exc: Exception) -> Response[bytes]:
    """Route-level exception handler: SQL unreachable is a 503 (retry later), never a 500 with details."""
    log.warning("store unavailable: %s", type(exc).__name__)
    return error(503, "store unavailable")


# `exception_handlers=STORE_ERRORS` on a route: SQL down answers 503 like /v1/entitlements does.
STORE_ERRORS: ExceptionHandlersMap = {SQLAlchemyError: store_unavailable, OSError: store_unavailable}
