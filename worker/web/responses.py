"""JSON responses shaped as DESIGN.md promises: `{"status": ...}` or `{"error": ...}`."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Response

_encoder = msgspec.json.Encoder()


def json_response(payload: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(
        content=_encoder.encode(payload), status_code=status_code, media_type="application/json",
        headers=headers,
    )


def error(status_code: int, message: str, **extra: Any) -> Response[bytes]:
    return json_response({"error": message, **extra}, status_code)
