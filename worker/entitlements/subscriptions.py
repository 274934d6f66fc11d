"""Subscriptions: one set of grants per subscription (one licence key kept for its whole life),
following the subscription's status, seats and plan.

Out-of-order delivery: each event carries a timestamp; a grant remembers the newest it applied
(`state_at`) and older events leave it alone. `cancelled`, `expired` and `failed` are terminal:
no later event brings a revoked subscription grant back (support can, with `grants restore`).
Either way the event says so: a note on its handler run (`events show`) and a log line.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements import revocations
from worker.entitlements.cart import seat_addons
from worker.entitlements.models import GrantKind, GrantRow, GrantSource, GrantStatus, SubscriptionPaymentRow
from worker.entitlements.provision import grant_product, owner_of
from worker.entitlements.service import Grants, Initial
from worker.entitlements.sql import insert_ignore, lock, lock_many
from worker.events import Payment, Subscription
from worker.store.inbox import add_note
from worker.store.models import utcnow

SUBSCRIPTION, PLAN_CHANGED = "subscription", "plan_changed"

_STATUS_OF_EVENT = {
    "subscription.active": "active", "subscription.renewed": "active", "subscription.unpaused": "active",
    "subscription.on_hold": "on_hold", "subscription.paused": "paused", "subscription.past_due": "past_due",
    "subscription.cancelled": "cancelled", "subscription.expired": "expired", "subscription.failed": "failed",
}
_GRANT_STATUS = {
    "active": GrantStatus.ACTIVE,
    "on_hold": GrantStatus.SUSPENDED, "paused": GrantStatus.SUSPENDED, "past_due": GrantStatus.SUSPENDED,
    "cancelled": GrantStatus.REVOKED, "expired": GrantStatus.REVOKED, "failed": GrantStatus.REVOKED,
}


def parse_time(value: object) -> datetime | None:
    """An event's time in UTC: ISO text or an already parsed datetime; None for anything else."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)


def is_newer(at: datetime | None, grant: GrantRow) -> bool:
    """Apply this event to the grant? Equal times apply again (a replay changes nothing)."""
    seen = parse_time(grant.state_at)
    return at is None or seen is None or at >= seen


async def on_subscription(grants: Grants, sub: Subscription, event_type: str, timestamp: str | None) -> int:
    """Bring the subscription's grants to what this event says; the number of changes."""
    sub_id = sub.subscription_id
    if not sub_id:
        return 0
    payment_id = await _lock_with_payment(grants.session, sub_id, sub.payment_id)
    raw_status = sub.status or _STATUS_OF_EVENT.get(event_type)
    target = _GRANT_STATUS.get(raw_status or "")
    at = parse_time(timestamp)
    state_at = at.isoformat() if at else None
    why = f"subscription {sub_id} {raw_status} ({event_type})"
    spec = grants.catalog.product(sub.product_id)
    limit = None
    if spec is not None and spec.license_key is not None and spec.license_key.activations_limit is not None:
        limit = spec.license_key.activations_limit + grants.catalog.seats(seat_addons(grants.catalog, sub))

    existing = await _grants_of(grants, sub_id)
    _note_stale(grants, sub_id, event_type, at, existing)
    changes = await _follow_plan(grants, existing, sub, at, why, state_at)

    created_ids: set[str] = set()
    if spec is not None and sub.product_id and target is not None:
        initial = Initial(status=target, state_at=state_at,
                          reason=None if target == GrantStatus.ACTIVE else SUBSCRIPTION,
                          cause=None if target == GrantStatus.ACTIVE else raw_status,
                          text=None if target == GrantStatus.ACTIVE else f"granted {target}: {why}")
        owner = owner_of(sub, subscription_id=sub_id, payment_id=payment_id)
        created = await grant_product(grants, source=GrantSource.SUBSCRIPTION, source_id=sub_id,
                                      product_id=sub.product_id, spec=spec, owner=owner, initial=initial,
                                      activations_limit=limit)
        created_ids = set(created)
        changes += len(created)

    for grant in existing:
        if grant.id in created_ids or grant.product_id != sub.product_id or not is_newer(at, grant):
            continue
        grant.state_at = state_at or grant.state_at
        if sub.payment_id:
            grant.payment_id = sub.payment_id  # the latest renewal: its refund or dispute applies
        changes += await _apply_status(grants, grant, target, raw_status, why)
        if grant.kind == GrantKind.LICENSE_KEY and spec is not None and spec.license_key is not None:
            changes += await grants.set_limit(grant, limit, text=why)
    if payment_id:  # a refund or lost dispute of this payment may have come first
        changes += await revocations.apply(grants, payment_id)
    return changes


def _note_stale(grants: Grants, sub_id: str, event_type: str, at: datetime | None,
                existing: list[GrantRow]) -> None:
    """Say on the event when it is older than what its subscription's grants already follow, so
    that it changes none of them (Dodo delivers in no fixed order; a replayed old event too)."""
    stale = [g for g in existing if not is_newer(at, g)]
    if not stale or at is None:
        return
    newest = max(str(g.state_at) for g in stale)
    _note(grants, f"stale: subscription {sub_id} changed at {newest}, this event ({event_type}) is from "
                  f"{at.isoformat()}; {len(stale)} grant(s) left as they were")


def _note_terminal(grants: Grants, grant: GrantRow, raw_status: str | None) -> None:
    why = grant.status_reason or "revoked"
    if grant.status_cause:
        why += f", {grant.status_cause}"
    _note(grants, f"subscription {grant.source_id} {raw_status}: its {grant.kind} grant {grant.id} stays "
                  f"revoked ({why}); `dodo-worker grants restore {grant.id}` brings it back")


def _note(grants: Grants, text: str) -> None:
    if grants.actor.event_id is not None:  # a handler's run (not a support shell)
        add_note(grants.session, grants.actor.event_id, text)


async def _lock_with_payment(session: AsyncSession, sub_id: str, payment_id: str | None) -> str | None:
    """Lock the subscription and the payment its grants answer to: the event's own (renewals
    carry one), else the latest `payment.succeeded` seen for it. Both in one sorted statement, as
    `payments.prepare_batch` takes them, so the two never wait on each other in a circle."""
    guess = payment_id or await latest_payment(session, sub_id)
    await lock_many(session, [f"subscription:{sub_id}", *([f"payment:{guess}"] if guess else [])])
    if payment_id:
        return payment_id
    latest = await latest_payment(session, sub_id)  # again, under the lock: one may have just landed
    if latest and latest != guess:
        await lock(session, f"payment:{latest}")
    return latest


async def latest_payment(session: AsyncSession, sub_id: str) -> str | None:
    """The subscription's newest payment that a `payment.succeeded` named (None: none seen yet)."""
    row = SubscriptionPaymentRow
    return await session.scalar(
        select(row.payment_id).where(row.subscription_id == sub_id)
        .order_by(row.paid_at.is_(None), row.paid_at.desc(), row.created_at.desc()).limit(1))


def subscriptions_of(payment: Payment) -> list[str]:
    """The subscriptions a payment pays for (`subscription_ids` when it pays for several)."""
    ids = [payment.subscription_id, *(payment.get("subscription_ids") or [])]
    return sorted({value for value in ids if isinstance(value, str) and value})


async def link_payment(grants: Grants, payment: Payment) -> int:
    """payment.succeeded of a subscription: remember it, so the subscription's grants answer to
    it. Grants `subscription.active` created with no payment (it names none) take this one now;
    grants created later take it from `latest_payment`. A refund or lost dispute of the payment
    that came first (or that the payload shows) then revokes them. The number of changes."""
    payment_id = payment.payment_id
    sub_ids = subscriptions_of(payment)
    if not payment_id or not sub_ids:
        return 0
    session = grants.session
    await lock_many(session, [f"payment:{payment_id}", *(f"subscription:{sub_id}" for sub_id in sub_ids)])
    paid_at = parse_time(payment.get("created_at"))
    for sub_id in sub_ids:
        await insert_ignore(session, SubscriptionPaymentRow, {
            "payment_id": payment_id, "subscription_id": sub_id, "paid_at": paid_at,
            "event_id": grants.actor.event_id, "created_at": utcnow()})
        for grant in await _grants_of(grants, sub_id):
            if grant.payment_id is None:
                grant.payment_id, grant.updated_at = payment_id, utcnow()
    for seen in revocations.seen_in_payment(payment):
        await revocations.record(session, payment_id, seen, grants.actor.event_id)
    return await revocations.apply(grants, payment_id)


async def _apply_status(grants: Grants, grant: GrantRow, target: str | None, raw_status: str | None,
                        why: str) -> int:
    if target is None:
        return 0
    if grant.status == GrantStatus.REVOKED:
        # Terminal, or taken by a refund or dispute; only a plan change back undoes its own revoke.
        if grant.status_reason == PLAN_CHANGED and target == GrantStatus.ACTIVE:
            return int(await grants.restore(grant, text=why))
        if target != GrantStatus.REVOKED:
            _note_terminal(grants, grant, raw_status)
        return 0
    if target == GrantStatus.ACTIVE:
        return int(await grants.resume(grant, text=why))
    if target == GrantStatus.SUSPENDED:
        return int(await grants.suspend(grant, reason=SUBSCRIPTION, cause=raw_status, text=why))
    return int(await grants.revoke(grant, reason=SUBSCRIPTION, cause=raw_status, text=why))


async def _follow_plan(grants: Grants, existing: list[GrantRow], sub: Subscription, at: datetime | None,
                       why: str, state_at: str | None) -> int:
    """A plan change: the licence key moves to the new product (the customer keeps their key);
    files and hooks of the old product are revoked, the new product's are granted."""
    if not sub.product_id:
        return 0
    spec = grants.catalog.product(sub.product_id)
    keep_key = spec is not None and spec.license_key is not None
    has_key = any(g.kind == GrantKind.LICENSE_KEY and g.product_id == sub.product_id for g in existing)
    changes = 0
    for grant in existing:
        if grant.product_id == sub.product_id or not is_newer(at, grant):
            continue
        grant.state_at = state_at or grant.state_at
        if grant.kind == GrantKind.LICENSE_KEY and keep_key and not has_key:
            await grants.change_product(grant, sub.product_id, text=why)
            has_key = True
            changes += 1
        elif grant.status != GrantStatus.REVOKED:
            changes += await grants.revoke(grant, reason=PLAN_CHANGED, cause=sub.product_id,
                                           text=f"plan changed to {sub.product_id}: {why}")
    return changes


async def _grants_of(grants: Grants, sub_id: str) -> list[GrantRow]:
    rows = await grants.session.scalars(
        select(GrantRow).where(GrantRow.source == GrantSource.SUBSCRIPTION, GrantRow.source_id == sub_id)
        .order_by(GrantRow.id))
    return list(rows)
