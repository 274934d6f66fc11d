"""`dodo-worker grants list|show|revoke|restore|link-payments`: support work on entitlement grants.

Revoke and restore are changes like any other: audited (actor `cli:<user>`) and told to hooks."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Column, Table

from worker.cli.common import console, fail, print_json, run, settings_or_exit
from worker.entitlements.backfill import LinkReport, link_stored_payments
from worker.entitlements.catalog import load_catalog
from worker.entitlements.keys import mask
from worker.entitlements.models import GrantStatus
from worker.entitlements.queries import Filters, audit_trail, deliveries_of, find_grant, find_grants, parse_pairs
from worker.entitlements.service import Actor, Grants
from worker.entitlements.views import audit_json, grants_json
from worker.registry import RegistryError, load_handler_modules
from worker.settings import ConfigError, Settings
from worker.store import Database

app = typer.Typer(help="Inspect, revoke and restore entitlement grants.", no_args_is_help=True)


async def _list(settings: Settings, filters: Filters, limit: int) -> list[dict[str, Any]]:
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            return await grants_json(session, await find_grants(session, filters, limit), settings)
    finally:
        await db.dispose()


@app.command("list")
def list_command(
    customer_id: str | None = typer.Option(None, "--customer-id"),
    email: str | None = typer.Option(None, "--email"),
    payment_id: str | None = typer.Option(None, "--payment-id"),
    subscription_id: str | None = typer.Option(None, "--subscription-id"),
    metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE from checkout metadata; repeatable."),
    status: str | None = typer.Option(None, "--status", help=f"One of: {', '.join(GrantStatus.ALL)}."),
    limit: int = typer.Option(100, "--limit", min=1, max=10_000),
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout and nothing else."),
) -> None:
    """Grants matching every filter given, oldest first."""
    if status is not None and status not in GrantStatus.ALL:
        fail(f"--status must be one of {', '.join(GrantStatus.ALL)}")
    try:
        pairs = parse_pairs(metadata)
    except ValueError as exc:
        fail(f"--metadata {exc}")
    filters = Filters(customer_id=customer_id, email=email, payment_id=payment_id,
                      subscription_id=subscription_id, metadata=pairs, status=status)
    found = run(_list(settings_or_exit(), filters, limit))
    if as_json:
        print_json(found)
        return
    table = Table(Column("id", no_wrap=True, min_width=32), "kind", "status", "product", "customer",
                  "payment / subscription", "detail")
    for g in found:
        table.add_row(g["id"], g["kind"], g["status"], g["product_id"], g["email"] or g["customer_id"] or "",
                      g["payment_id"] or g["subscription_id"] or "", _detail(g))
    console.print(table)


def _detail(grant: dict[str, Any]) -> str:
    if "license_key" in grant:
        lic = grant["license_key"]
        return f"key {mask(lic['key'])}, {lic['activations']}/{lic['activations_limit'] or '∞'} activations"
    if "file" in grant:
        return str(grant["file"]["name"])
    return str(grant.get("hook", {}).get("url", ""))


async def _show(settings: Settings, grant_id: str) -> dict[str, Any] | None:
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            grant = await find_grant(session, grant_id)
            if grant is None:
                return None
            [shown] = await grants_json(session, [grant], settings)
            shown["audit"] = [audit_json(a) for a in await audit_trail(session, grant_id)]
            shown["deliveries"] = [
                {"id": d.id, "target": d.target, "event_type": d.event_type, "status": d.status,
                 "attempts": d.attempts, "last_error": d.last_error} for d in await deliveries_of(session, grant_id)]
            return shown
    finally:
        await db.dispose()


@app.command("show")
def show_command(
    grant_id: str = typer.Argument(..., help="The grant id (grt_...)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """One grant with its audit trail (who changed it, which event, when, why)."""
    found = run(_show(settings_or_exit(), grant_id))
    if found is None:
        fail(f"no grant {grant_id!r}", code=1)
    if as_json:
        print_json(found)
        return
    for key in ("id", "kind", "status", "status_reason", "product_id", "customer_id", "email", "payment_id",
                "subscription_id", "created_at"):
        console.print(f"[bold]{key:>15}[/bold]  {found[key]}", highlight=False)
    console.print(f"[bold]{'detail':>15}[/bold]  {_detail(found)}", highlight=False)
    table = Table("at", "action", "from", "to", "actor", "reason")
    for a in found["audit"]:
        table.add_row(a["at"], a["action"], a["from_status"] or "", a["to_status"] or "", a["actor"],
                      a["reason"] or "")
    console.print(table)


async def _change(settings: Settings, grant_id: str, action: str, reason: str | None) -> tuple[str, Any]:
    try:
        catalog = load_catalog(settings.entitlements_path)
        # Python hooks (@on_entitlement) live in the handler modules: without them a change made
        # here would queue no delivery for them.
        load_handler_modules(settings.handler_modules)
    except (ConfigError, RegistryError, ImportError) as exc:
        return "error", str(exc)
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session, session.begin():
            grant = await find_grant(session, grant_id)
            if grant is None:
                return "missing", None
            service = Grants(session, settings, catalog, Actor.cli())
            if action == "revoke":
                changed = await service.revoke(grant, reason="manual", cause=service.actor.name,
                                               text=reason or "revoked by support")
            else:
                changed = await service.restore(grant, text=reason or "restored by support")
            [shown] = await grants_json(session, [grant], settings)
            return ("changed" if changed else "unchanged"), shown
    finally:
        await db.dispose()


def _report_change(outcome: str, result: Any, grant_id: str, as_json: bool) -> None:
    if outcome == "error":
        fail(f"configuration error: {result}")
    if outcome == "missing":
        fail(f"no grant {grant_id!r}", code=1)
    if as_json:
        print_json({**result, "changed": outcome == "changed"})
        return
    word = "now" if outcome == "changed" else "already"
    console.print(f"grant {grant_id} is {word} {result['status']}", highlight=False)


@app.command("revoke")
def revoke_command(
    grant_id: str = typer.Argument(...),
    reason: str | None = typer.Option(None, "--reason", help="Why, for the audit trail."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Take a grant away (audited as cli:<you>; hooks are told)."""
    outcome, result = run(_change(settings_or_exit(), grant_id, "revoke", reason))
    _report_change(outcome, result, grant_id, as_json)


@app.command("restore")
def restore_command(
    grant_id: str = typer.Argument(...),
    reason: str | None = typer.Option(None, "--reason", help="Why, for the audit trail."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Give a revoked or suspended grant back (audited as cli:<you>; hooks are told)."""
    outcome, result = run(_change(settings_or_exit(), grant_id, "restore", reason))
    _report_change(outcome, result, grant_id, as_json)


async def _link_payments(settings: Settings) -> LinkReport:
    catalog = load_catalog(settings.entitlements_path)
    load_handler_modules(settings.handler_modules)  # Python hooks hear the revocations it causes
    db = Database(settings.DATABASE_URL)
    try:
        return await link_stored_payments(db, settings, catalog)
    finally:
        await db.dispose()


@app.command("link-payments")
def link_payments_command(as_json: bool = typer.Option(False, "--json")) -> None:
    """Once after upgrading to schema 0004: link the subscription payments processed before it to
    their subscriptions' grants, so a refund of a first payment reaches them (safe to repeat)."""
    settings = settings_or_exit()
    try:
        report = run(_link_payments(settings))
    except (ConfigError, RegistryError, ImportError) as exc:
        fail(f"configuration error: {exc}")
    if as_json:
        print_json({"payments": report.payments, "linked": report.linked, "changes": report.changes})
        return
    console.print(f"{report.payments} subscription payment(s) in the inbox, {report.linked} linked now, "
                  f"{report.changes} grant change(s) (refunds and disputes applied)", highlight=False)
