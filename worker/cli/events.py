"""`dodo-worker events list|show|replay`."""

from __future__ import annotations

import textwrap
from typing import Any

import typer

from worker import queue
from worker.cli.common import console, fail, print_json, run, settings_or_exit
from worker.settings import Settings
from worker.store import Database, EventRow, EventStatus, inbox
from worker.store.inbox import event_summary

app = typer.Typer(help="Inspect and replay events.", no_args_is_help=True)

__all__ = ["app", "event_summary", "replay"]

ID_HELP = "The event id (the webhook-id header), or enough of its start to name one event."


def _flag(name: str, help_text: str) -> Any:
    """An on/off option shown as a flag (typer would print `<bool>` after it, as if it took a value)."""
    return typer.Option(False, name, help=help_text, metavar="")


def _json_flag() -> Any:
    return _flag("--json", "Print JSON on stdout and nothing else.")


async def _list(settings: Settings, status: str | None, event_type: str | None, limit: int) -> list[EventRow]:
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            return list(await inbox.list_events(session, status=status, event_type=event_type, limit=limit))
    finally:
        await db.dispose()


@app.command("list")
def list_command(
    status: str | None = typer.Option(None, "--status", metavar="STATUS",
                                      help=f"Only events in this status: {', '.join(EventStatus.ALL)}."),
    event_type: str | None = typer.Option(None, "--type", metavar="TYPE",
                                          help="Only this event type, or a family like 'refund.*'."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000, metavar="N", help="At most N events."),
    as_json: bool = _json_flag(),
) -> None:
    """Events, newest first (full ids: `events show` and `events replay` take them, or their start)."""
    if status is not None and status not in EventStatus.ALL:
        fail(f"--status must be one of {', '.join(EventStatus.ALL)}")
    settings = settings_or_exit()
    rows = run(_list(settings, status, event_type, limit))
    if as_json:
        print_json([event_summary(r) for r in rows])
        return
    if not rows:
        console.print("no events", highlight=False)
        return
    _print_rows(rows)


def _received(row: EventRow) -> str:
    return row.received_at.strftime("%m-%d %H:%M:%S")  # UTC; the year is in --json and `events show`


HEADER = ("id", "type", "status", "att", "received")


def _print_rows(rows: list[EventRow]) -> None:
    """One line per event when the ids and types fit the terminal, else two (the id alone on the
    first): an id is never cut, so that it can be copied into `events show`."""
    cells = [(r.id, r.type, r.status, str(r.attempts), _received(r)) for r in rows]
    widths = [max(len(row[i]) for row in [HEADER, *cells]) for i in range(len(HEADER))]
    if sum(widths) + 2 * (len(widths) - 1) <= console.width:
        for row in [HEADER, *cells]:
            say("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        return
    for event_id, event_type, status, attempts, received in cells:
        say(event_id)
        say(f"  {status.ljust(widths[2])}  {received}  {attempts} att  {event_type}")


def say(text: str) -> None:
    console.print(text, highlight=False, markup=False, soft_wrap=True)


async def _resolve(db: Database, text: str) -> str:
    """The full id of the one event `text` is the id or the start of the id of; else one line and
    exit 1 (none) or 2 (several)."""
    async with db.sessions() as session:
        match = await inbox.match_event_id(session, text)
    if match.count == 1:
        return match.ids[0]
    if match.count == 0:
        fail(f"no event {text!r}", code=1)
    more = ", ..." if match.count > len(match.ids) else ""
    fail(f"{match.count} events start with {text!r} ({', '.join(match.ids)}{more}); give more of the id")


async def _show(settings: Settings, text: str) -> dict[str, Any] | None:
    db = Database(settings.DATABASE_URL)
    try:
        event_id = await _resolve(db, text)
        async with db.sessions() as session:
            return await inbox.event_detail(session, event_id)
    finally:
        await db.dispose()


@app.command("show")
def show_command(
    event_id: str = typer.Argument(..., metavar="ID", help=ID_HELP),
    as_json: bool = _json_flag(),
) -> None:
    """One event with each handler's state and every attempt it made (replays add to them)."""
    settings = settings_or_exit()
    found = run(_show(settings, event_id))
    if found is None:  # deleted between the lookup and the read
        fail(f"no event {event_id!r}", code=1)
    if as_json:
        print_json(found)
        return
    for key in ("id", "type", "status", "source", "attempts", "received_at", "processed_at", "last_error"):
        say(f"{key:>12}  {found[key]}")
    for handler in found["handlers"]:
        _print_handler(handler)


def _last_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[-1] if lines else ""


def _print_handler(handler: dict[str, Any]) -> None:
    """A handler's state, then one line per attempt, each with its error's last line or its note."""
    say(f"\n{handler['name']}  {handler['status']}, {handler['attempts']} attempt(s) this round")
    for attempt in handler["runs"]:
        took = f"{attempt['duration_ms']:.0f} ms" if attempt["duration_ms"] is not None else "-"
        replayed = f" (replay {attempt['round'] - 1})" if attempt["round"] > 1 else ""
        started = (attempt["started_at"] or "-")[:19].replace("T", " ")
        say(f"  #{attempt['attempt']}{replayed}  {attempt['status']:<11}  {started}  {took}")
        if attempt["error"]:
            say(_indented(f"error: {_last_line(attempt['error'])}"))
        if attempt["note"]:
            say(_indented(f"note: {attempt['note']}"))


def _indented(text: str, indent: str = "      ") -> str:
    """`text` wrapped to the terminal at spaces (never inside an id), every line indented."""
    width = max(40, console.width)
    return "\n".join(textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=indent,
                                   break_long_words=False, break_on_hyphens=False)) or indent


async def replay(settings: Settings, event_ids: list[str] | None, dead: bool) -> dict[str, Any]:
    """Reset the events for another round of attempts and put them on the queue."""
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session, session.begin():
            ids = event_ids or (await inbox.dead_event_ids(session) if dead else [])
            done = await inbox.reset_many(session, ids)
    finally:
        await db.dispose()
    enqueued: list[str] = []
    if done.replayed and settings.REDIS_URL:
        redis = queue.connect(settings.REDIS_URL)
        try:
            enqueued = done.replayed if await queue.enqueue_each(redis, settings.QUEUE_NAME, done.replayed) else []
        finally:
            await redis.aclose(close_connection_pool=True)
    return {"replayed": done.replayed, "enqueued": enqueued, "missing": done.missing, "busy": done.busy}


async def _replay_one(settings: Settings, text: str) -> dict[str, Any]:
    db = Database(settings.DATABASE_URL)
    try:
        event_id = await _resolve(db, text)
    finally:
        await db.dispose()
    return await replay(settings, [event_id], False)


@app.command("replay")
def replay_command(
    event_id: str | None = typer.Argument(None, metavar="ID", help=ID_HELP),
    dead: bool = _flag("--dead", "Replay every dead event instead."),
    as_json: bool = _json_flag(),
) -> None:
    """Run an event's unfinished handlers again, with a fresh set of attempts (its history stays)."""
    if (event_id is None) == (not dead):
        fail("give an event id or --dead (not both)")
    settings = settings_or_exit()
    result = run(_replay_one(settings, event_id) if event_id else replay(settings, None, dead))
    if as_json:
        print_json(result)
    else:
        console.print(f"replayed {len(result['replayed'])} event(s): {', '.join(result['replayed'])}"
                      if result["replayed"] else "replayed 0 event(s)", highlight=False, soft_wrap=True)
        if len(result["enqueued"]) < len(result["replayed"]):
            console.print("Redis unreachable: the worker's sweeper will queue them within seconds.")
        if result["busy"]:
            console.print(f"not replayed, a worker is processing it now: {', '.join(result['busy'])}",
                          highlight=False, soft_wrap=True)
    if result["missing"]:
        fail(f"no event {', '.join(result['missing'])}", code=1)
