"""The hook outbox: each grant change becomes one DeliveryRow per target, in the change's own
transaction, so a change is never lost and never told twice. Delivery happens elsewhere.

Targets of a change: the hook URLs its product lists in the catalog (only when HOOKS_SIGNING_KEY
is set; a `hook` grant goes to its own URL only) and every Python hook (`@on_entitlement`) that
wants the event type.

Only the worker knows those targets: it has the signing key, the catalog and the merchant's
handler modules. A change made anywhere else (`dodo-worker grants revoke` from a support
shell, the console) writes one row to the target FAN_OUT instead, carrying the hook body; the
worker's delivery pass expands it (`expand`) into one row per target as the worker sees them,
exactly once, and then signs, sends and calls them like its own.
"""

from __future__ import annotations

import hashlib
import json
import logging

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements import hooks
from worker.entitlements.catalog import Catalog
from worker.entitlements.models import AuditRow, DeliveryRow, DeliveryStatus, GrantKind, GrantRow
from worker.entitlements.sql import insert_ignore
from worker.entitlements.views import activation_counts, grant_json
from worker.scrub import redact_url
from worker.settings import Settings
from worker.store.models import utcnow

log = logging.getLogger("dodo_worker.entitlements")

FAN_OUT = "worker:fan-out"  # the target of a change made outside the worker (see `expand`)
EXPANDED = "expanded"  # the status of a FAN_OUT row once the worker wrote its deliveries
RETRYABLE = (DeliveryStatus.FAILED, DeliveryStatus.REFUSED)


def url_targets(settings: Settings, catalog: Catalog, grant: GrantRow) -> list[str]:
    return grant_url_targets(settings, catalog, grant.kind, grant.product_id, grant.item)


def grant_url_targets(settings: Settings, catalog: Catalog, kind: str, product_id: str | None,
                      hook_url: str | None) -> list[str]:
    if settings.HOOKS_SIGNING_KEY is None:
        return []
    if kind == GrantKind.HOOK:
        return [hook_url] if hook_url else []
    product = catalog.product(product_id)
    return list(product.hooks) if product is not None else []


def delivery_id(grant_id: str, audit_id: int, target: str) -> str:
    digest = hashlib.sha256(f"{grant_id}|{audit_id}|{target}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"


def targets(settings: Settings, catalog: Catalog, grant: GrantRow, event_type: str) -> list[str]:
    """Where a change of this grant goes (hook URLs, Python hooks), each once."""
    return list(dict.fromkeys([*url_targets(settings, catalog, grant), *hooks.targets_for(event_type)]))


def expanded_id(fan_out_id: str, target: str) -> str:
    digest = hashlib.sha256(f"{fan_out_id}|{target}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"


async def enqueue(session: AsyncSession, settings: Settings, catalog: Catalog, grant: GrantRow,
                  audit: AuditRow, event_type: str, to: list[str] | None = None) -> int:
    """Write the deliveries of one change (`audit`, already flushed); how many were written."""
    to = targets(settings, catalog, grant, event_type) if to is None else to
    if not to:
        return 0
    counts = await activation_counts(session, [grant.id]) if grant.kind == GrantKind.LICENSE_KEY else {}
    payload = json.dumps({
        "type": event_type,
        "timestamp": audit.at.isoformat(),
        "data": grant_json(grant, settings, activations=counts.get(grant.id, 0)),
    }, separators=(",", ":"))
    written = 0
    for target in to:
        written += await insert_ignore(session, DeliveryRow, {
            "id": delivery_id(grant.id, audit.id, target),
            "grant_id": grant.id,
            "target": target,
            "event_type": event_type,
            "payload": payload,
            "status": DeliveryStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": audit.at,
        })
    return written


def body_targets(settings: Settings, catalog: Catalog, event_type: str, payload: str) -> list[str]:
    """The targets of a change from its hook body (the grant as it was then), as this process sees them."""
    try:
        body = json.loads(payload)
    except ValueError:
        body = None
    grant = body.get("data") if isinstance(body, dict) else None
    if not isinstance(grant, dict):
        return list(hooks.targets_for(event_type))
    hook = grant.get("hook")
    urls = grant_url_targets(settings, catalog, str(grant.get("kind") or ""), grant.get("product_id"),
                             hook.get("url") if isinstance(hook, dict) else None)
    return list(dict.fromkeys([*urls, *hooks.targets_for(event_type)]))


async def expand(session: AsyncSession, settings: Settings, catalog: Catalog, row: DeliveryRow) -> int:
    """Turn a FAN_OUT row (locked by the caller) into one pending delivery per target; how many
    were written. Idempotent: the rows' ids derive from the FAN_OUT row's, so doing it again
    writes nothing. They keep its `created_at`, so they queue behind older deliveries of the
    grant and ahead of newer ones, in the order the changes happened."""
    now = utcnow()
    due = row.next_attempt_at or row.created_at  # due already: the claim in this transaction takes them
    written = 0
    for target in body_targets(settings, catalog, row.event_type, row.payload):
        written += await insert_ignore(session, DeliveryRow, {
            "id": expanded_id(row.id, target), "grant_id": row.grant_id, "target": target,
            "event_type": row.event_type, "payload": row.payload, "status": DeliveryStatus.PENDING,
            "attempts": 0, "next_attempt_at": due, "created_at": row.created_at,
        })
    row.status, row.delivered_at, row.next_attempt_at = EXPANDED, now, None
    row.attempts += 1
    return written


async def retry(session: AsyncSession, ids: list[str] | None) -> list[str]:
    """Make these failed or refused deliveries (None: every failed one) pending again, due now;
    the ids retried. They keep their age, so one more failure past HOOKS_GIVE_UP_HOURS makes
    them `failed` again rather than retrying for days."""
    query = select(DeliveryRow.id).where(DeliveryRow.status.in_(RETRYABLE))
    query = query.where(DeliveryRow.id.in_(ids)) if ids else query.where(DeliveryRow.status == DeliveryStatus.FAILED)
    found = list(await session.scalars(query))
    if found:
        await session.execute(update(DeliveryRow).where(DeliveryRow.id.in_(found)).values(
            status=DeliveryStatus.PENDING, next_attempt_at=utcnow()))
    return sorted(found)


def log_hook_status(settings: Settings, catalog: Catalog) -> None:
    """Said once at worker start: URL hooks in the catalog are not sent without a signing key,
    and plain http ones are refused without HOOKS_ALLOW_HTTP."""
    urls = {url for p in catalog.spec.products.values() for url in p.hooks}
    if settings.HOOKS_SIGNING_KEY is None and urls:
        log.warning("HOOKS_SIGNING_KEY is not set: hook URLs in the entitlements catalog are disabled "
                    "(Python hooks still run)")
    if not settings.HOOKS_ALLOW_HTTP:
        for url in sorted(u for u in urls if u.lower().startswith("http://")):
            log.warning("hook %s is plain http: its deliveries will be refused (use https, or set "
                        "HOOKS_ALLOW_HTTP=true)", redact_url(url))
