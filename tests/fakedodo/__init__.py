"""A fake Dodo Payments REST API for tests and the benchmark (see server.py)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import uvicorn

from tests.fakedodo.server import FakeDodo


@contextlib.asynccontextmanager
async def serve(fake: FakeDodo) -> AsyncIterator[str]:
    """Serve `fake` over real HTTP on 127.0.0.1 in this event loop; yields its base URL."""
    from tests.support import free_port, serving

    config = uvicorn.Config(fake, host="127.0.0.1", port=free_port(), log_level="warning",
                            access_log=False, lifespan="off")
    async with serving(config, what="the fake Dodo API to start") as url:
        yield url


__all__ = ["FakeDodo", "serve"]
