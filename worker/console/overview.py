"""The overview page (/console): the state of the pipeline at a glance."""

from __future__ import annotations

from datetime import timedelta

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.types import ControllerRouterHandler

from worker.console import stats
from worker.console.chart import bars
from worker.console.params import SignedIn
from worker.console.render import render


def age(delta: timedelta | None) -> str:
    if delta is None:
        return "none waiting"
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


@get("/")
async def overview(request: Request, state: State, operator: SignedIn) -> Response:
    figures = await stats.overview(state.runtime)
    chart = bars([h.received for h in figures.hours], [h.start.strftime("%H:00") for h in figures.hours],
                 "Webhooks received per hour, last 24 hours (UTC)")
    return render(request, "overview.html", title="Overview", o=figures, chart=chart,
                  oldest=age(figures.oldest_waiting), received_24h=sum(h.received for h in figures.hours))


ROUTES: list[ControllerRouterHandler] = [overview]
