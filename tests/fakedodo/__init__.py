"""A fake Dodo Payments REST API for tests and the benchmark (see server.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import uvicorn

from tests.fakedodo.server import FakeDodo


@contextlib.asynccontextmanager
async def serve(fake: FakeDodo) -> AsyncIterator[str]:
    """Serve `fake` over real HTTP on 127.0.0.1 in this event loop; yields its base URL."""
    from tests.support import free_port, wait_until

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(fake, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()
        return bool(server.started)

    await wait_until(started, what="the fake Dodo API to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


__all__ = ["FakeDodo", "serve"]
