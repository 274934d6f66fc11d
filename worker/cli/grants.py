"""`dodo-worker grants list|show|revoke|restore|link-payments`: support work on entitlement grants.

Revoke and restore are changes like any other: audited (actor `cli:<user>`) and told to hooks.
The worker tells them (it has HOOKS_SIGNING_KEY, the catalog and the merchant's Python hooks),
so these commands need none of those in the support shell. A grant id may be shortened to any
unique start of it (`grt_3fa9c1` or `3fa9c1`), as git allows for commits."""

from __future__ import annotations

from typing import Any

import typer

from worker.cli.common import fail, print_json, run, settings_or_exit
from worker.cli.hooks import delivery_summary
from worker.cli.text import JSON_HELP, say, wrapped
from worker.entitlements.backfill import LinkReport, link_stored_payments
from worker.entitlements.catalog import Catalog, load_catalog
from worker.entitlements.keys import mask
from worker.entitlements.models import GrantStatus
from worker.entitlements.queries import (
    AmbiguousId,
    Filters,
    audit_trail,
    deliveries_of,
    find_grant_by_prefix,
    find_grants,
    parse_pairs,
)
from worker.entitlements.service import Actor, Grants
from worker.entitlements.views import audit_json, grants_json
from worker.settings import ConfigError, Settings
from worker.store import Database

app = typer.Typer(help="Inspect, revoke and restore entitlement grants.", no_args_is_help=True)

GRANT_HELP = "The grant id (grt_...), or a unique start of it."
async def _list(settings: Settings, filters: Filters, limit: int) -> list[dict[str, Any]]:
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            return await grants_json(session, await find_grants(session, filters, limit), settings)
    finally:
        await db.dispose()


@app.command("list")
def list_command(
    customer_id: str | None = typer.Option(None, "--customer-id", metavar="ID",
                                           help="Only this Dodo customer's grants (cus_...)."),
    email: str | None = typer.Option(None, "--email", metavar="EMAIL", help="Only grants of this email (any case)."),
    payment_id: str | None = typer.Option(None, "--payment-id", metavar="ID",
                                          help="Only grants of this payment (pay_...)."),
    subscription_id: str | None = typer.Option(None, "--subscription-id", metavar="ID",
                                               help="Only grants of this subscription (sub_...)."),
    metadata: list[str] = typer.Option([], "--metadata", metavar="KEY=VALUE",
                                       help="Checkout metadata to match; repeatable."),
    status: str | None = typer.Option(None, "--status", metavar="STATUS",
                                      help=f"One of: {', '.join(GrantStatus.ALL)}."),
    limit: int = typer.Option(100, "--limit", metavar="N", min=1, max=10_000, help="Show at most this many."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Grants matching every filter given, oldest first: two lines each (id, status, kind; then
    product, customer, payment or subscription, and what it holds)."""
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
    for grant in found:
        say(f"{grant['id']}  {grant['status']:<9}  {grant['kind']}")
        say(wrapped(" · ".join(_about(grant))))
    more = f"; --limit {limit} reached, there may be more" if len(found) == limit else ""
    say(f"{len(found)} grant(s){more}")


def _about(grant: dict[str, Any]) -> list[str]:
    """Who it is for, what paid for it and what it holds: the second line of a listed grant."""
    parts = [grant["product_id"], grant["email"] or grant["customer_id"] or "unknown customer"]
    parts += [grant[name] for name in ("payment_id", "subscription_id") if grant[name]]
    return [*parts, _detail(grant)]


def _detail(grant: dict[str, Any]) -> str:
    if "license_key" in grant:
        lic = grant["license_key"]
        return f"key {mask(lic['key'])}, {lic['activations']}/{lic['activations_limit'] or '∞'} activations"
    if "file" in grant:
        return f"file {grant['file']['name']}"
    return f"hook {grant.get('hook', {}).get('url', '')}"


async def _show(settings: Settings, text: str) -> dict[str, Any] | None:
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session:
            grant = await find_grant_by_prefix(session, text)
            if grant is None:
                return None
            [shown] = await grants_json(session, [grant], settings)
            if "file" in shown:
                shown["file"]["downloads"] = grant.downloads
            shown["audit"] = [audit_json(a) for a in await audit_trail(session, grant.id)]
            shown["deliveries"] = [delivery_summary(d) for d in await deliveries_of(session, grant.id)]
            return shown
    finally:
        await db.dispose()


def _found(outcome: Any, text: str) -> Any:
    """The command's result, or exit 1 when `text` names no grant or several."""
    if isinstance(outcome, AmbiguousId):
        fail(f"{outcome}; give more of the id", code=1)
    if outcome is None:
        fail(f"no grant {text!r}", code=1)
    return outcome


async def _guarded(coro: Any) -> Any:
    try:
        return await coro
    except AmbiguousId as exc:
        return exc


@app.command("show")
def show_command(
    grant_id: str = typer.Argument(..., metavar="GRANT_ID", help=GRANT_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """One grant with its audit trail (who changed it, which event, when, why) and its hook deliveries."""
    found = _found(run(_guarded(_show(settings_or_exit(), grant_id))), grant_id)
    if as_json:
        print_json(found)
        return
    for key in ("id", "kind", "status", "status_reason", "product_id", "customer_id", "email", "payment_id",
                "subscription_id", "created_at"):
        say(f"{key:>15}  {found[key] if found[key] is not None else '-'}")
    say(f"{'detail':>15}  {_detail(found)}")
    if "file" in found:
        say(f"{'downloads':>15}  {found['file']['downloads']}")
    say("audit (UTC):")
    for entry in found["audit"]:
        say(wrapped(_audit_line(entry), "  "))
        say(wrapped(f"by {entry['actor']}" + (f": {entry['reason']}" if entry["reason"] else ""), "      "))
    say(f"hook deliveries: {len(found['deliveries'])}")
    for delivery in found["deliveries"]:
        say(wrapped(f"{delivery['event_type']} to {delivery['target']}: {delivery['status']}, "
                    f"{delivery['attempts']} attempt(s)" + (f", {delivery['last_error']}" if delivery["last_error"]
                                                            else ""), "  "))


def _audit_line(entry: dict[str, Any]) -> str:
    at = (entry["at"] or "")[:19].replace("T", " ")
    return f"{at}  {entry['action']}: {entry['from_status'] or '-'} -> {entry['to_status'] or '-'}"


async def _change(settings: Settings, text: str, action: str, reason: str | None) -> tuple[str, Any]:
    """Revoke or restore. The change's hook deliveries are left to the worker (see the module
    docstring), so neither the catalog nor the handler modules are loaded here."""
    db = Database(settings.DATABASE_URL)
    try:
        async with db.sessions() as session, session.begin():
            grant = await find_grant_by_prefix(session, text)
            if grant is None:
                return "missing", None
            service = Grants(session, settings, Catalog.empty(), Actor.cli())
            if action == "revoke":
                changed = await service.revoke(grant, reason="manual", cause=service.actor.name,
                                               text=reason or "revoked by support")
            else:
                changed = await service.restore(grant, text=reason or "restored by support")
            [shown] = await grants_json(session, [grant], settings)
            return ("changed" if changed else "unchanged"), shown
    except AmbiguousId as exc:
        return "ambiguous", exc
    finally:
        await db.dispose()


def _report_change(outcome: str, result: Any, text: str, as_json: bool) -> None:
    if outcome == "ambiguous":
        fail(f"{result}; give more of the id", code=1)
    if outcome == "missing":
        fail(f"no grant {text!r}", code=1)
    if as_json:
        print_json({**result, "changed": outcome == "changed"})
        return
    word = "now" if outcome == "changed" else "already"
    told = "; the worker tells its hooks" if outcome == "changed" else ""
    say(f"grant {result['id']} is {word} {result['status']}{told}")


REASON_HELP = "Why, for the audit trail."


@app.command("revoke")
def revoke_command(
    grant_id: str = typer.Argument(..., metavar="GRANT_ID", help=GRANT_HELP),
    reason: str | None = typer.Option(None, "--reason", metavar="TEXT", help=REASON_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Take a grant away (audited as cli:<you>; the worker tells the hooks)."""
    outcome, result = run(_change(settings_or_exit(), grant_id, "revoke", reason))
    _report_change(outcome, result, grant_id, as_json)


@app.command("restore")
def restore_command(
    grant_id: str = typer.Argument(..., metavar="GRANT_ID", help=GRANT_HELP),
    reason: str | None = typer.Option(None, "--reason", metavar="TEXT", help=REASON_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """Give a revoked or suspended grant back (audited as cli:<you>; the worker tells the hooks)."""
    outcome, result = run(_change(settings_or_exit(), grant_id, "restore", reason))
    _report_change(outcome, result, grant_id, as_json)


async def _link_payments(settings: Settings) -> LinkReport:
    catalog = load_catalog(settings.entitlements_path)  # partial refunds revoke per the catalog
    db = Database(settings.DATABASE_URL)
    try:
        return await link_stored_payments(db, settings, catalog)
    finally:
        await db.dispose()


@app.command("link-payments")
def link_payments_command(as_json: bool = typer.Option(False, "--json", help=JSON_HELP)) -> None:
    """Once after upgrading to schema 0004: link the subscription payments processed before it to
    their subscriptions' grants, so a refund of a first payment reaches them (safe to repeat)."""
    settings = settings_or_exit()
    try:
        report = run(_link_payments(settings))
    except ConfigError as exc:
        fail(f"configuration error: {exc}")
    if as_json:
        print_json({"payments": report.payments, "linked": report.linked, "changes": report.changes})
        return
    say(f"{report.payments} subscription payment(s) in the inbox, {report.linked} linked now, "
        f"{report.changes} grant change(s) (refunds and disputes applied)")
