"""`dodo-worker events list|show|replay`."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from worker import queue
from worker.cli.common import console, fail, print_json, run, settings_or_exit
from worker.settings import Settings
from worker.store import Database, EventRow, EventStatus, HandlerRunRow, inbox

app = typer.Typer(help="Inspect and replay events.", no_args_is_help=True)


def event_summary(row: EventRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "type": row.type,
        "status": row.status,
        "source": row.source,
        "attempts": row.attempts,
        "object_id": row.object_id,
        "received_at": row.received_at.isoformat(),
        "updated_at": row.updated_at.isoformat(),
        "processed_at": row.processed_at.isoformat() if row.processed_at else None,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "last_error": row.last_error,
    }


def run_summary(run_row: HandlerRunRow) -> dict[str, Any]:
    return {
        "name": run_row.handler,
        "status": run_row.status,
        "attempts": run_row.attempts,
        "error": run_row.last_error,
        "duration_ms": round(run_row.duration_ms, 3) if run_row.duration_ms is not None else None,
        "idempotency_key": f"{run_row.event_id}:{run_row.handler}",
    }


async def _list(settings: Settings, status: str | None, event_type: str | None, limit: int) -> list[EventRow]:
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            return list(await inbox.list_events(session, status=status, event_type=event_type, limit=limit))
    finally:
        await db.dispose()


@app.command("list")
def list_command(
    status: str | None = typer.Option(None, "--status", help=f"One of: {', '.join(EventStatus.ALL)}."),
    event_type: str | None = typer.Option(None, "--type", help="An event type, or a prefix like 'refund.*'."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout and nothing else."),
) -> None:
    """Events, newest first."""
    if status is not None and status not in EventStatus.ALL:
        fail(f"--status must be one of {', '.join(EventStatus.ALL)}")
    settings = settings_or_exit()
    rows = run(_list(settings, status, event_type, limit))
    if as_json:
        print_json([event_summary(r) for r in rows])
        return
    table = Table("id", "type", "status", "source", "attempts", "received_at")
    for r in rows:
        table.add_row(r.id, r.type, r.status, r.source, str(r.attempts), r.received_at.isoformat(timespec="seconds"))
    console.print(table)


async def _show(settings: Settings, event_id: str) -> dict[str, Any] | None:
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            row = await inbox.get_event(session, event_id)
            if row is None:
                return None
            runs = await inbox.get_runs(session, event_id)
            return {**event_summary(row), "handlers": [run_summary(r) for r in runs], "body": row.body}
    finally:
        await db.dispose()


@app.command("show")
def show_command(
    event_id: str = typer.Argument(..., help="The event id (the webhook-id header)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One event with each handler's runs."""
    settings = settings_or_exit()
    found = run(_show(settings, event_id))
    if found is None:
        fail(f"no event {event_id!r}", code=1)
    if as_json:
        print_json(found)
        return
    for key in ("id", "type", "status", "source", "attempts", "received_at", "processed_at", "last_error"):
        console.print(f"[bold]{key:>12}[/bold]  {found[key]}", highlight=False)
    table = Table("handler", "status", "attempts", "duration_ms", "error")
    for h in found["handlers"]:
        error = (h["error"] or "").strip().splitlines()
        table.add_row(h["name"], h["status"], str(h["attempts"]), str(h["duration_ms"]), error[-1] if error else "")
    console.print(table)


async def replay(settings: Settings, event_ids: list[str] | None, dead: bool) -> dict[str, Any]:
    """Reset the events for another round of attempts and put them on the queue."""
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session, session.begin():
            ids = event_ids or (await inbox.dead_event_ids(session) if dead else [])
            found, busy = [], []
            for i in ids:
                if await inbox.reset_for_replay(session, i) is not None:
                    found.append(i)
                elif await inbox.get_event(session, i) is not None:
                    busy.append(i)  # a worker is processing it right now
        missing = sorted(set(ids) - set(found) - set(busy))
    finally:
        await db.dispose()
    enqueued: list[str] = []
    if found and settings.REDIS_URL:
        redis = queue.connect(settings.REDIS_URL)
        try:
            enqueued = found if await queue.enqueue_each(redis, settings.QUEUE_NAME, found) else []
        finally:
            await redis.aclose(close_connection_pool=True)
    return {"replayed": found, "enqueued": enqueued, "missing": missing, "busy": busy}


@app.command("replay")
def replay_command(
    event_id: str | None = typer.Argument(None, help="The event to replay."),
    dead: bool = typer.Option(False, "--dead", help="Replay every dead event."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run an event's unfinished handlers again, with a fresh set of attempts."""
    if (event_id is None) == (not dead):
        fail("give an event id or --dead (not both)")
    settings = settings_or_exit()
    result = run(replay(settings, [event_id] if event_id else None, dead))
    if as_json:
        print_json(result)
    else:
        console.print(f"replayed {len(result['replayed'])} event(s)")
        if len(result["enqueued"]) < len(result["replayed"]):
            console.print("Redis unreachable: the worker's sweeper will queue them within seconds.")
        if result["busy"]:
            console.print(f"not replayed, a worker is processing it now: {', '.join(result['busy'])}")
    if result["missing"]:
        fail(f"no event {', '.join(result['missing'])}", code=1)
