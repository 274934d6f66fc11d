"""The overview page (/console): the state of the pipeline at a glance."""

from __future__ import annotations

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.types import ControllerRouterHandler

from worker.console import stats
from worker.console.chart import Series, bars
from worker.console.params import SignedIn
from worker.console.render import render


def age(seconds_waited: float | None) -> str:
    if seconds_waited is None:
        return "none waiting"
    seconds = int(seconds_waited)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


RECEIVED, REJECTED = "#0b5cad", "#c0392b"


@get("/")
async def overview(request: Request, state: State, operator: SignedIn) -> Response:
    figures = await stats.overview(state.runtime)
    labels = [h.start.strftime("%H:00") for h in figures.hours]
    series = [Series("received", [h.received for h in figures.hours], RECEIVED)]
    if figures.rejected_24h is not None:
        series.append(Series("rejected", [h.rejected or 0 for h in figures.hours], REJECTED))
    chart = bars(series, labels, "Webhooks received and rejected per hour, last 24 hours (UTC)")
    queue = figures.queue
    return render(request, "overview.html", title="Overview", o=figures, chart=chart, queue=queue,
                  oldest=age(queue.oldest_waiting_seconds) if queue is not None else "?")


ROUTES: list[ControllerRouterHandler] = [overview]
