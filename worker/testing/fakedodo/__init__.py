"""A fake Dodo Payments REST API for tests and the benchmark (see server.py): the test kit's
`dodo.fake_api`, and the project's own reconciliation tests."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from worker.testing.fakedodo.server import FakeDodo


@contextlib.asynccontextmanager
async def serve(fake: FakeDodo, servers: list[Any] | None = None) -> AsyncIterator[str]:
    """Serve `fake` over real HTTP on 127.0.0.1 in this event loop; yields its base URL."""
    from worker.testing.serving import serve_app

    async with serve_app(fake, what="the fake Dodo API to start", servers=servers) as url:
        yield url


__all__ = ["FakeDodo", "serve"]
