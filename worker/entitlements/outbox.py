"""The hook outbox: each grant change becomes one DeliveryRow per target, in the change's own
transaction, so a change is never lost and never told twice. Delivery happens elsewhere.

Targets of a change: the hook URLs its product lists in the catalog (only when HOOKS_SIGNING_KEY
is set; a `hook` grant goes to its own URL only) and every Python hook (`@on_entitlement`) that
wants the event type.
"""

from __future__ import annotations

import hashlib
import json
import logging

from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements import hooks
from worker.entitlements.catalog import Catalog
from worker.entitlements.models import AuditRow, DeliveryRow, DeliveryStatus, GrantKind, GrantRow
from worker.entitlements.sql import insert_ignore
from worker.entitlements.views import activation_counts, grant_json
from worker.settings import Settings

log = logging.getLogger("dodo_worker.entitlements")


def url_targets(settings: Settings, catalog: Catalog, grant: GrantRow) -> list[str]:
    if settings.HOOKS_SIGNING_KEY is None:
        return []
    if grant.kind == GrantKind.HOOK:
        return [grant.item]
    product = catalog.product(grant.product_id)
    return list(product.hooks) if product is not None else []


def delivery_id(grant_id: str, audit_id: int, target: str) -> str:
    digest = hashlib.sha256(f"{grant_id}|{audit_id}|{target}".encode()).hexdigest()
    return f"dlv_{digest[:32]}"


def targets(settings: Settings, catalog: Catalog, grant: GrantRow, event_type: str) -> list[str]:
    """Where a change of this grant goes (hook URLs, Python hooks), each once."""
    return list(dict.fromkeys([*url_targets(settings, catalog, grant), *hooks.targets_for(event_type)]))


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


def log_hook_status(settings: Settings, catalog: Catalog) -> None:
    """Said once at worker start: URL hooks in the catalog are not sent without a signing key."""
    if settings.HOOKS_SIGNING_KEY is None and any(p.hooks for p in catalog.spec.products.values()):
        log.warning("HOOKS_SIGNING_KEY is not set: hook URLs in the entitlements catalog are disabled "
                    "(Python hooks still run)")
