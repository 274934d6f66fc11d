"""The events pages (/console/events, /console/events/{id}) and their replay actions.

Replays go through what `POST /v1/events/{id}/replay` and `events replay` use: the event is
reset in SQL (with the audit entry, in one transaction) and queued; a worker processing it right
now leaves it alone (the page says so), and an event not queued (Redis down) is queued by the
sweeper within seconds."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import NotFoundException
from litestar.params import FromPath
from litestar.types import ControllerRouterHandler

from worker import queue
from worker.console import audit
from worker.console.auth import Operator
from worker.console.find_events import event_types, find_events, grant_changes
from worker.console.params import Form, SignedIn
from worker.console.render import render, see_other
from worker.runtime import Runtime
from worker.store import EventStatus, inbox

REPLAYABLE = (EventStatus.DEAD, EventStatus.FAILED)
# What a redirect after an action says (`?notice=KEY`): fixed texts, so a link cannot put words on the page.
NOTICES = {
    "replayed": "Replayed: the event is queued and a worker will process it again.",
    "busy": "Not replayed: a worker is processing this event right now. Try again when it settles.",
    "replayed-dead": "Every dead event was replayed.",
    "no-dead": "There was no dead event to replay.",
}


def _page_number(raw: str | None) -> int:
    return int(raw) if raw is not None and raw.isdigit() and 0 < int(raw) < 100_000 else 1


@get("/events")
async def events_page(request: Request, state: State, operator: SignedIn) -> Response:
    params = request.query_params
    status = params.get("status") or None
    status = status if status in EventStatus.ALL else None
    event_type = (params.get("type") or "").strip()[:128] or None
    search = (params.get("q") or "").strip()[:255] or None
    runtime: Runtime = state.runtime
    async with runtime.db.sessions() as session:
        found = await find_events(session, status=status, event_type=event_type, search=search,
                                  page=_page_number(params.get("page")))
        types = await event_types(session)
        dead = (await inbox.count_by_status(session, [EventStatus.DEAD]))[EventStatus.DEAD]
    kept = {k: v for k, v in (("status", status), ("type", event_type), ("q", search)) if v}

    def page_link(number: int) -> str:
        return "/console/events?" + urlencode({**kept, "page": number})

    template = "_events_table.html" if request.headers.get("hx-request") == "true" else "events.html"
    return render(request, template, title="Events", found=found, statuses=EventStatus.ALL, types=types,
                  status=status, event_type=event_type, search=search or "", dead=dead,
                  previous_page=page_link(found.page - 1) if found.page > 1 else None,
                  next_page=page_link(found.page + 1) if found.has_next else None,
                  notice=NOTICES.get(params.get("notice") or ""))


def _pretty(body: str) -> str:
    try:
        return json.dumps(json.loads(body), indent=2, ensure_ascii=False, sort_keys=False)
    except ValueError:
        return body


@get("/events/{event_id:str}")
async def event_page(request: Request, state: State, operator: SignedIn, event_id: FromPath[str]) -> Response:
    runtime: Runtime = state.runtime
    async with runtime.db.sessions() as session:
        detail = await inbox.event_detail(session, event_id)
        if detail is None:
            raise NotFoundException(f"No event {event_id!r}.")
        changes = await grant_changes(session, event_id)
        trail = await audit.entries(session, target=event_id, limit=50)
    return render(request, "event.html", title=f"Event {event_id}", event=detail, envelope=_pretty(detail["body"]),
                  changes=changes, trail=trail, replayable=detail["status"] in REPLAYABLE,
                  notice=NOTICES.get(request.query_params.get("notice") or ""))


async def _replay(state: State, operator: Operator, event_ids: list[str], action: str) -> inbox.Replayed:
    runtime: Runtime = state.runtime
    async with runtime.db.sessions() as session, session.begin():
        done = await inbox.reset_many(session, event_ids)
        for event_id in done.replayed:
            audit.add(session, operator, action, event_id)
    await queue.enqueue_each(runtime.redis, state.settings.QUEUE_NAME, done.replayed)
    return done


@post("/events/{event_id:str}/replay", status_code=303)
async def replay_event(state: State, operator: SignedIn, form: Form, event_id: FromPath[str]) -> Response:
    done = await _replay(state, operator, [event_id], "event.replay")
    if done.missing:
        raise NotFoundException(f"No event {event_id!r}.")
    notice = "replayed" if done.replayed else "busy"
    return see_other(f"/console/events/{event_id}?notice={notice}")


@post("/events/replay-dead", status_code=303)
async def replay_dead(state: State, operator: SignedIn, form: Form) -> Response:
    runtime: Runtime = state.runtime
    async with runtime.db.sessions() as session:
        ids = await inbox.dead_event_ids(session)
    done = await _replay(state, operator, ids, "event.replay-dead")
    return see_other("/console/events?notice=" + ("replayed-dead" if done.replayed else "no-dead"))


ROUTES: list[ControllerRouterHandler] = [events_page, replay_dead, event_page, replay_event]
