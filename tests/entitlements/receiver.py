"""A merchant's hook endpoint for tests: a tiny ASGI app under real uvicorn that records every
request and answers 500 to the first `fail_first` tries of each message (by `webhook-id`)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import uvicorn

from tests.support import free_port, serving


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int


@dataclass
class HookEndpoint:
    fail_first: int = 0
    status: int = 204
    calls: list[Received] = field(default_factory=list)

    def delivered(self) -> list[Received]:
        return [c for c in self.calls if 200 <= c.status < 300]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        tries = sum(1 for c in self.calls if c.headers.get("webhook-id") == headers.get("webhook-id"))
        status = 500 if tries < self.fail_first else self.status
        self.calls.append(Received(scope["path"], headers, body, status))
        extra = [(b"location", b"http://127.0.0.1:9/elsewhere")] if 300 <= status < 400 else []
        await send({"type": "http.response.start", "status": status, "headers": extra})
        await send({"type": "http.response.body", "body": b""})


@contextlib.asynccontextmanager
async def serve(app: Any, host: str = "127.0.0.1", port: int | None = None) -> AsyncIterator[str]:
    """Serve `app` over real HTTP in this event loop; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off")
    async with serving(config, what=f"the hook endpoint on {host}:{port} to start") as url:
        yield url
