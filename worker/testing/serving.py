"""Serving an ASGI app over real HTTP inside the test's event loop, and awaiting conditions."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

WAIT_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until(predicate: Callable[[], Awaitable[Any]], seconds: float = WAIT_SECONDS,
                     what: str = "condition", every: float = 0.01) -> Any:
    """Await a condition by polling it (what we wait for happens in another task)."""
    deadline = time.monotonic() + seconds
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def serve_app(app: Any, what: str = "the server to start", lifespan: str = "off",
                    servers: list[Any] | None = None) -> AsyncIterator[str]:
    """Serve the ASGI `app` on 127.0.0.1 (a free port) in this event loop; yields its base URL.
    The server is added to `servers`, for a caller that stops several at once (each takes up to
    0.1 s, uvicorn's tick, to notice it should stop)."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                            access_log=False, lifespan=lifespan,  # type: ignore[arg-type]
                            proxy_headers=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    if servers is not None:
        servers.append(server)

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await wait_until(started, what=what, every=0.005)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        await task
