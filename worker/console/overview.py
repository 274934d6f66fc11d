"""The overview page (/console): the state of the pipeline at a glance."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.types import ControllerRouterHandler

from worker.console.auth import Operator
from worker.console.render import render


@get("/")
async def overview(request: Request, operator: Operator) -> Response:
    return render(request, "overview.html", title="Overview")


ROUTES: list[ControllerRouterHandler] = [overview]
