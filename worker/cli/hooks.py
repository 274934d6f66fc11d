"""`dodo-worker hooks list|retry`: the outbox of entitlement hooks, for support work.

A delivery that kept failing for HOOKS_GIVE_UP_HOURS is `failed`; once the merchant's endpoint
is fixed, `hooks retry --failed` sends those again, once (same webhook-id). A resend may arrive
after a newer change of the same grant was delivered: payloads carry the change's `timestamp`.
`refused` ones (private address) can be retried by id after the settings or DNS are fixed.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table
from sqlalchemy import select, update

from integrations.hooks import redact
from worker.cli.common import console, fail, print_json, run, settings_or_exit
from worker.entitlements.models import DeliveryRow, DeliveryStatus
from worker.settings import Settings
from worker.store import Database
from worker.store.models import utcnow

app = typer.Typer(help="Inspect and retry entitlement hook deliveries.", no_args_is_help=True)

STATUSES = (DeliveryStatus.PENDING, DeliveryStatus.DELIVERED, DeliveryStatus.REFUSED, DeliveryStatus.FAILED)
RETRYABLE = (DeliveryStatus.FAILED, DeliveryStatus.REFUSED)


def delivery_summary(row: DeliveryRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "grant_id": row.grant_id,
        "target": row.target if row.target.startswith("python:") else redact(row.target),
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "last_error": row.last_error,
        "next_attempt_at": row.next_attempt_at.isoformat() if row.next_attempt_at else None,
        "created_at": row.created_at.isoformat(),
        "delivered_at": row.delivered_at.isoformat() if row.delivered_at else None,
    }


async def _list(settings: Settings, status: str | None, grant_id: str | None, limit: int) -> list[DeliveryRow]:
    db = Database(settings.DATABASE_URL)
    try:
        query = select(DeliveryRow).order_by(DeliveryRow.created_at.desc()).limit(limit)
        if status is not None:
            query = query.where(DeliveryRow.status == status)
        if grant_id is not None:
            query = query.where(DeliveryRow.grant_id == grant_id)
        async with db.sessions() as session:
            return list(await session.scalars(query))
    finally:
        await db.dispose()


@app.command("list")
def list_command(
    status: str | None = typer.Option(None, "--status", help=f"One of: {', '.join(STATUSES)}."),
    grant_id: str | None = typer.Option(None, "--grant", help="Only this grant's deliveries."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout and nothing else."),
) -> None:
    """Hook deliveries, newest first."""
    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}")
    rows = run(_list(settings_or_exit(), status, grant_id, limit))
    if as_json:
        print_json([delivery_summary(r) for r in rows])
        return
    table = Table("id", "event_type", "target", "status", "attempts", "last_error")
    for r in rows:
        s = delivery_summary(r)
        table.add_row(s["id"], s["event_type"], s["target"], s["status"], str(s["attempts"]), s["last_error"] or "")
    console.print(table)


async def retry(settings: Settings, ids: list[str] | None) -> dict[str, Any]:
    """Make these failed or refused deliveries (None: every failed one) pending again, due now.
    They keep their age, so one more failure past HOOKS_GIVE_UP_HOURS makes them `failed` again
    rather than retrying for days."""
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session, session.begin():
            query = select(DeliveryRow.id).where(DeliveryRow.status.in_(RETRYABLE))
            query = query.where(DeliveryRow.id.in_(ids)) if ids else query.where(
                DeliveryRow.status == DeliveryStatus.FAILED)
            found = list(await session.scalars(query))
            if found:
                now = utcnow()
                await session.execute(update(DeliveryRow).where(DeliveryRow.id.in_(found)).values(
                    status=DeliveryStatus.PENDING, next_attempt_at=now))
    finally:
        await db.dispose()
    return {"retried": sorted(found), "missing": sorted(set(ids or []) - set(found))}


@app.command("retry")
def retry_command(
    delivery_id: str | None = typer.Argument(None, help="A failed or refused delivery."),
    failed: bool = typer.Option(False, "--failed", help="Retry every failed delivery."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Send failed (or refused) deliveries again; the worker picks them up within a second."""
    if (delivery_id is None) == (not failed):
        fail("give a delivery id or --failed (not both)")
    result = run(retry(settings_or_exit(), [delivery_id] if delivery_id else None))
    if as_json:
        print_json(result)
    else:
        console.print(f"{len(result['retried'])} delivery(ies) will be sent again")
    if result["missing"]:
        fail(f"no failed or refused delivery {', '.join(result['missing'])}", code=1)
