"""The /v1 API (entitlements, licences, downloads, events) plugs in here.

The event routes answer what the `events` commands print with `--json`, from the same views
(`worker.store.inbox`), for the bearer `WORKER_API_TOKEN`:
`GET /v1/events?status=&type=&limit=` (`{"events": [...]}`, newest first), `GET /v1/events/{id}`
(one event with its handlers and every attempt) and `POST /v1/events/{id}/replay`.
"""

from __future__ import annotations

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler

from worker import queue
from worker.runtime import Runtime
from worker.store import EventStatus, inbox
from worker.web.auth import check_bearer
from worker.web.responses import STORE_ERRORS, error, json_response

MAX_LIMIT = 10_000


def api_routes() -> list[ControllerRouterHandler]:
    from worker.web.downloads import download
    from worker.web.entitlements import list_entitlements
    from worker.web.licenses import ROUTES as LICENSE_ROUTES

    return [list_entitlements, *LICENSE_ROUTES, download, *EVENT_ROUTES]


def _limit(request: Request) -> int | str:
    """`limit` of the query string (default 100), or what is wrong with it."""
    text = request.query_params.get("limit", "100")
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        return f"limit must be a whole number from 1 to {MAX_LIMIT}"
    return int(text)


@get("/v1/events", exception_handlers=STORE_ERRORS)
async def list_events(request: Request, state: State) -> Response[bytes]:
    denied = check_bearer(request, state.settings)
    if denied is not None:
        return denied
    status, event_type = request.query_params.get("status"), request.query_params.get("type")
    if status is not None and status not in EventStatus.ALL:
        return error(400, f"status must be one of {', '.join(EventStatus.ALL)}")
    limit = _limit(request)
    if isinstance(limit, str):
        return error(400, limit)
    runtime: Runtime = state.runtime
    async with runtime.db.sessions() as session:
        rows = await inbox.list_events(session, status=status, event_type=event_type, limit=limit)
        return json_response({"events": [inbox.event_summary(row) for row in rows]})


@get("/v1/events/{event_id:str}", exception_handlers=STORE_ERRORS)
async def show_event(request: Request, state: State, event_id: FromPath[str]) -> Response[bytes]:
    denied = check_bearer(request, state.settings)
    if denied is not None:
        return denied
    runtime: Runtime = state.runtime
    async with runtime.db.sessions() as session:
        found = await inbox.event_detail(session, event_id)
    return error(404, f"no event {event_id!r}") if found is None else json_response(found)


@post("/v1/events/{event_id:str}/replay", exception_handlers=STORE_ERRORS, status_code=200)
async def replay_event(request: Request, state: State, event_id: FromPath[str]) -> Response[bytes]:
    """As `events replay ID --json`: 404 for no such event, 409 while a worker is processing it."""
    denied = check_bearer(request, state.settings)
    if denied is not None:
        return denied
    runtime: Runtime = state.runtime
    async with runtime.db.sessions() as session, session.begin():
        done = await inbox.reset_many(session, [event_id])
    if done.missing:
        return error(404, f"no event {event_id!r}")
    if done.busy:
        return error(409, f"event {event_id!r} is being processed now; try again when it settles")
    # Not queued (Redis down): the sweeper queues the reset event within seconds.
    enqueued = await queue.enqueue_each(runtime.redis, state.settings.QUEUE_NAME, done.replayed)
    return json_response({"replayed": done.replayed, "enqueued": done.replayed if enqueued else [],
                          "missing": [], "busy": []})


EVENT_ROUTES: list[ControllerRouterHandler] = [list_events, show_event, replay_event]
