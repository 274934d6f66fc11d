"""One-time payments, their refunds and disputes, and the keys Dodo issued itself."""

from __future__ import annotations

import json
from collections import Counter

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements import revocations, subscriptions
from worker.entitlements.cart import BadOrder, granted_lines
from worker.entitlements.catalog import Catalog
from worker.entitlements.models import GrantKind, GrantRow, GrantSource, GrantStatus
from worker.entitlements.provision import grant_product, owner_of, plan_product
from worker.entitlements.revocations import DISPUTE, DISPUTE_STATES, FULL, PARTIAL, REFUND, WON, Seen
from worker.entitlements.service import GrantKey, Grants, Initial, NewGrant, Owner, insert_ahead
from worker.entitlements.sql import lock, lock_many
from worker.events import Dispute, Event, LicenseKey, Payment, Refund
from worker.registry import RESOURCES


def is_subscription_payment(payment: Payment) -> bool:
    """Renewals (and multi-subscription payments) grant nothing: the subscription's grant does."""
    return bool(payment.subscription_id or payment.get("subscription_ids"))


async def prepare_batch(events: list[Event], session: AsyncSession) -> None:
    """Before a batch of payment, refund, dispute and licence-key events: take their payments'
    locks in one statement and read their revocations in one query (instead of two round trips
    per event; `lock` and `revocations.for_payment` then answer from what this did)."""
    payment_ids = sorted({data.payment_id for data in (e.data for e in events)
                          if isinstance(data, Payment | Refund | Dispute | LicenseKey) and data.payment_id})
    # A subscription's payment also locks its subscription (`subscriptions.link_payment`).
    subscription_ids = sorted({sub_id for e in events if isinstance(e.data, Payment)
                               for sub_id in subscriptions.subscriptions_of(e.data)})
    if payment_ids:
        await lock_many(session, [*(f"payment:{payment_id}" for payment_id in payment_ids),
                                  *(f"subscription:{sub_id}" for sub_id in subscription_ids)])
        await revocations.prefetch(session, payment_ids)
        await _insert_grants_ahead(events, session)


async def _insert_grants_ahead(events: list[Event], session: AsyncSession) -> None:
    """The grants of the batch's plain paid orders in one INSERT (`service.insert_ahead`), for
    `on_payment` to take: one statement per batch instead of one per order. Only orders whose
    grants surely start active: no refund or dispute in the payload or recorded, and no other
    event of the batch about the same payment (its refund could come first in the batch)."""
    resources = session.info.get(RESOURCES) or {}
    catalog = resources.get("catalog")
    if not isinstance(catalog, Catalog):
        return
    mentions = Counter(data.payment_id for data in (e.data for e in events)
                       if isinstance(data, Payment | Refund | Dispute | LicenseKey) and data.payment_id)
    planned: list[tuple[list[NewGrant], Owner]] = []
    for event in events:
        payment = event.data
        if event.type != "payment.succeeded" or not isinstance(payment, Payment) or not _grants_itself(payment):
            continue
        payment_id = payment.payment_id or ""
        if mentions[payment_id] > 1 or revocations.seen_in_payment(payment):
            continue
        if await revocations.for_payment(session, payment_id):  # prefetched: no query
            continue
        try:
            lines = granted_lines(catalog, payment)
        except BadOrder:  # `on_payment` raises it, for this event alone
            continue
        owner = owner_of(payment, payment_id=payment_id)
        for line in lines:
            planned.append((plan_product(catalog, source=GrantSource.PAYMENT, source_id=payment_id,
                                         product_id=line.product_id, spec=line.spec, units=line.units), owner))
    if planned:
        await insert_ahead(session, planned)


def _grants_itself(payment: Payment) -> bool:
    """A payment that `on_payment` grants the cart of (not a subscription's)."""
    return payment.status == "succeeded" and bool(payment.payment_id) and not is_subscription_payment(payment)


async def on_payment(grants: Grants, payment: Payment) -> int:
    """payment.succeeded: grant each catalog product of the cart, once. Refunds and disputes the
    payload shows, or that arrived earlier, leave the new grants revoked. The count created.
    A subscription's payment grants nothing itself: its subscription's grants answer to it."""
    if payment.status != "succeeded" or not payment.payment_id:
        return 0
    if is_subscription_payment(payment):
        return await subscriptions.link_payment(grants, payment)
    payment_id = payment.payment_id
    lines = granted_lines(grants.catalog, payment)  # BadOrder: dead at once, nothing granted
    await lock(grants.session, f"payment:{payment_id}")
    for seen in revocations.seen_in_payment(payment):
        await revocations.record(grants.session, payment_id, seen, grants.actor.event_id)
    recorded = await revocations.for_payment(grants.session, payment_id)
    owner = owner_of(payment, payment_id=payment_id)
    created = 0
    for line in lines:
        initial = revocations.initial_for(recorded, grants.catalog, line.product_id)
        rows = await grant_product(grants, source=GrantSource.PAYMENT, source_id=payment_id,
                                   product_id=line.product_id, spec=line.spec, owner=owner,
                                   units=line.units, initial=initial)
        created += len(rows)
    await revocations.apply(grants, payment_id, recorded)  # grants that existed before this news
    return created


async def on_refund(grants: Grants, refund: Refund) -> int:
    """refund.succeeded: a full refund revokes the payment's grants; a partial one only where the
    catalog says `revoke_on_partial_refund`. Remembered for grants that do not exist yet."""
    if refund.status not in (None, "succeeded") or not refund.payment_id or not refund.refund_id:
        return 0
    await lock(grants.session, f"payment:{refund.payment_id}")
    state = PARTIAL if refund.is_partial else FULL
    await revocations.record(grants.session, refund.payment_id, Seen(REFUND, refund.refund_id, state),
                             grants.actor.event_id)
    return await revocations.apply(grants, refund.payment_id)


async def on_dispute(grants: Grants, dispute: Dispute, event_type: str) -> int:
    """dispute.lost and dispute.accepted (the merchant gave the money back) revoke the payment's
    grants; dispute.won gives back what that dispute took. The payload's `dispute_status` (the
    latest state) wins over the event type."""
    if not dispute.payment_id or not dispute.dispute_id:
        return 0
    status = dispute.dispute_status or ("dispute_" + event_type.split(".", 1)[1])
    state = DISPUTE_STATES.get(status)
    if state is None:
        return 0
    await lock(grants.session, f"payment:{dispute.payment_id}")
    seen = Seen(DISPUTE, dispute.dispute_id, state)
    await revocations.record(grants.session, dispute.payment_id, seen, grants.actor.event_id)
    if state == WON:
        return await revocations.dispute_won(grants, dispute.payment_id, dispute.dispute_id)
    return await revocations.apply(grants, dispute.payment_id)


async def on_license_key(grants: Grants, key: LicenseKey) -> int:
    """license_key.created: record a key Dodo issued so the read API shows it (keyed on its lic_ id).
    Email and metadata come from a grant of the same payment or subscription, when there is one."""
    if not key.id or not key.key or not key.product_id:
        return 0
    owner = Owner(customer_id=key.customer_id, business_id=key.get("business_id"),
                  payment_id=key.payment_id, subscription_id=key.subscription_id)
    await _borrow_owner(grants, owner)
    if key.payment_id:
        await lock(grants.session, f"payment:{key.payment_id}")
    recorded = await revocations.for_payment(grants.session, key.payment_id) if key.payment_id else []
    initial = revocations.initial_for(recorded, grants.catalog, key.product_id)
    if initial is None and key.status in ("disabled", "expired"):
        initial = Initial(status=GrantStatus.REVOKED, reason="dodo", cause=key.id,
                          text=f"Dodo shows the key {key.status}")
    row = await grants.create(
        GrantKey(GrantSource.DODO, key.id, key.product_id, GrantKind.LICENSE_KEY), owner, initial,
        license_key=key.key, activations_limit=key.activations_limit, expires_at=key.expires_at,
        dodo_license_key_id=key.id)
    return 1 if row is not None else 0


async def _borrow_owner(grants: Grants, owner: Owner) -> None:
    clauses: list[ColumnElement[bool]] = []
    if owner.payment_id:
        clauses.append(GrantRow.payment_id == owner.payment_id)
    if owner.subscription_id:
        clauses.append(GrantRow.subscription_id == owner.subscription_id)
    if not clauses:
        return
    other = await grants.session.scalar(select(GrantRow).where(or_(*clauses)).order_by(GrantRow.created_at).limit(1))
    if other is None:
        return
    owner.email = owner.email or other.email
    owner.customer_name = owner.customer_name or other.customer_name
    owner.customer_id = owner.customer_id or other.customer_id
    owner.metadata = owner.metadata or json.loads(other.metadata_json or "{}")
