"""`dodo-worker hooks list|retry`: the outbox of entitlement hooks, for support work.

A delivery that kept failing for HOOKS_GIVE_UP_HOURS is `failed`; once the merchant's endpoint
is fixed, `hooks retry --failed` sends those again, once (same webhook-id). A resend may arrive
after a newer change of the same grant was delivered: payloads carry the change's `timestamp`.
`refused` ones (private address) can be retried by id after the settings or DNS are fixed.
A change made from the CLI shows first as one `worker:fan-out` row, `expanded` by the worker
into one delivery per hook. Ids may be shortened to a unique start (`dlv_3fa9c1`, `3fa9c1`).
"""

from __future__ import annotations

from typing import Any

import typer
from sqlalchemy import select

from integrations.hooks import redact
from worker.cli.common import fail, print_json, run, settings_or_exit
from worker.cli.text import JSON_HELP, say, wrapped
from worker.entitlements import outbox
from worker.entitlements.models import DeliveryRow, DeliveryStatus, GrantRow
from worker.entitlements.outbox import EXPANDED, FAN_OUT
from worker.entitlements.queries import GRANT_PREFIX, AmbiguousId, resolve_id
from worker.settings import Settings
from worker.store import Database

app = typer.Typer(help="Inspect and retry entitlement hook deliveries.", no_args_is_help=True)

STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.REFUSED, DeliveryStatus.FAILED,
            EXPANDED)
DELIVERY_PREFIX = "dlv_"


def delivery_summary(row: DeliveryRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "grant_id": row.grant_id,
        "target": row.target if row.target.startswith("python:") or row.target == FAN_OUT else redact(row.target),
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "created_at": row.created_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


async def _list(settings: Settings, status: str | None, grant: str | None, limit: int) -> list[DeliveryRow] | str:
    """The deliveries, or why `grant` names no grant."""
    db = Database(settings.DATABASE_URL)
    try:
        query = select(DeliveryRow).order_by(DeliveryRow.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(DeliveryRow.status == status)
        async with db.sessions() as session:
            if grant is not None:
                try:
                    grant_id = await resolve_id(session, GrantRow, grant, GRANT_PREFIX)
                except AmbiguousId as exc:
                    return f"--grant {exc}; give more of the id"
                if grant_id is None:
                    return f"no grant {grant!r}"
                query = query.where(DeliveryRow.grant_id == grant_id)
            return list(await session.scalars(query))
    finally:
        await db.dispose()


@app.command("list")
def list_command(
    status: str | None = typer.Option(None, "--status", metavar="STATUS", help=f"One of: {', '.join(STATUSES)}."),
    grant_id: str | None = typer.Option(None, "--grant", metavar="GRANT_ID",
                                        help="Only this grant's deliveries (a unique start of its id will do)."),
    limit: int = typer.Option(100, "--limit", metavar="N", min=1, max=10_000, help="Show at most this many."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Hook deliveries, newest first: two or three lines each."""
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}")
    rows = run(_list(settings_or_exit(), status, grant_id, limit))
    if isinstance(rows, str):
        fail(rows, code=1)
    if as_json:
        print_json([delivery_summary(r) for r in rows])
        return
    for row in rows:
        shown = delivery_summary(row)
        say(f"{shown['id']}  {shown['status']:<9}  {shown['event_type']}")
        say(wrapped(f"to {shown['target']} · grant {shown['grant_id']} · {shown['attempts']} attempt(s)"))
        if shown["last_error"]:
            say(wrapped(f"last error: {shown['last_error']}"))
    more = f"; --limit {limit} reached, there may be more" if len(rows) == limit else ""
    say(f"{len(rows)} delivery(ies){more}")


async def retry(settings: Settings, ids: list[str] | None) -> dict[str, Any]:
    """Make these failed or refused deliveries (None: every failed one) pending again (see `outbox.retry`)."""
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session, session.begin():
            if ids:
                ids = [await _full_delivery_id(session, text) for text in ids]
            found = await outbox.retry(session, ids)
    finally:
        await db.dispose()
    return {"retried": found, "missing": sorted(set(ids or []) - set(found))}


async def _full_delivery_id(session: Any, text: str) -> str:
    """The delivery id `text` starts (itself when it starts none, or several)."""
    try:
        found = await resolve_id(session, DeliveryRow, text, DELIVERY_PREFIX)
    except AmbiguousId:
        return text
    return found or text


@app.command("retry")
def retry_command(
    delivery_id: str | None = typer.Argument(None, metavar="DELIVERY_ID",
                                             help="A failed or refused delivery (a unique start of its id will do)."),
    failed: bool = typer.Option(False, "--failed", help="Retry every failed delivery."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Send failed (or refused) deliveries again; the worker picks them up within a second."""
    if (delivery_id is None) == (not failed):
        fail("give a delivery id or --failed (not both)")
    result = run(retry(settings_or_exit(), [delivery_id] if delivery_id else None))
    if as_json:
        print_json(result)
    else:
        say(f"{len(result['retried'])} delivery(ies) will be sent again")
    if result["missing"]:
        fail(f"no failed or refused delivery {', '.join(result['missing'])}", code=1)
