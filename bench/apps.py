"""ASGI app factories the benchmarks serve in their own processes."""

from __future__ import annotations

from litestar import Litestar, Request, Response, post

from worker.settings import load_settings
from worker.web.app import create_app


@post("/webhooks/dodo", status_code=200)
async def bare_endpoint(request: Request) -> Response[bytes]:
    await request.body()
    return Response(content=b'{"status":"accepted"}', media_type="application/json")


def bare() -> Litestar:
    """The floor: a Litestar endpoint that only reads the body."""
    return Litestar(route_handlers=[bare_endpoint], openapi_config=None, logging_config=None)


def receiver() -> Litestar:
    """The real receiver, configured from the environment."""
    return create_app(load_settings())
