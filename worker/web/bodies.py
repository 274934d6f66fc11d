"""Request bodies from clients we do not trust: read with a size cap, parsed with a depth limit.

json and msgspec recurse once per nesting level and raise RecursionError near 1,000 levels (less
the caller's stack), which a route would turn into a 500. Here a body is read at most `limit`
bytes, decoded by msgspec (RecursionError caught), and its nesting measured without recursion,
so anything a client sends ends as a `BodyError` with a 4xx status and a one-line message."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request


class BodyTooLarge(Exception):
    pass


class BodyError(Exception):
    """A body refused: `status` (413, 422), `reason` (a metric label) and a one-line message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message


async def read_body(request: Request[Any, Any, Any], limit: int) -> bytes:
    """Read at most `limit` bytes, refusing early when Content-Length already says more."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge
    return bytes(body)


def nesting_depth(value: object, limit: int) -> int:
    """How deeply arrays and objects nest in `value`, counting no further than `limit + 1`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            break
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def may_nest_deeper(body: bytes, limit: int) -> bool:
    """Cheap pre-check (C-speed counts): fewer brackets than the limit cannot nest deeper."""
    return body.count(b"[") + body.count(b"{") > limit


def decode_json(body: bytes, max_depth: int) -> Any:
    """The JSON value of `body`; BodyError (422) when it is not JSON or nests deeper than `max_depth`."""
    too_deep = BodyError(422, "too_deep", f"the body is nested more than {max_depth} levels deep")
    try:
        value = msgspec.json.decode(body)
    except msgspec.DecodeError:
        raise BodyError(422, "malformed", "the body is not JSON") from None
    except RecursionError:
        raise too_deep from None
    if may_nest_deeper(body, max_depth) and nesting_depth(value, max_depth) > max_depth:
        raise too_deep
    return value


async def read_json_object(request: Request[Any, Any, Any], limit: int, max_depth: int) -> dict[str, Any]:
    """A JSON object body of at most `limit` bytes and `max_depth` levels, else BodyError."""
    try:
        body = await read_body(request, limit)
    except BodyTooLarge:
        raise BodyError(413, "too_large", f"the body is larger than {limit} bytes") from None
    value = decode_json(body, max_depth)
    if not isinstance(value, dict):
        raise BodyError(422, "malformed", "the body is not a JSON object")
    return value
