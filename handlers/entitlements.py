"""Built-in entitlement handlers: grant on payment and subscription, take back on refund,
dispute and cancellation, record keys Dodo issued. Registered with `@on` like any handler; the
work happens in `worker.entitlements` within the handler's transaction (`ctx.session`). They only
work in SQL, so they are `batched`: under load many events' runs share one transaction."""

from __future__ import annotations

from worker import Context, Event, on
from worker.entitlements import payments, subscriptions
from worker.entitlements.catalog import Catalog
from worker.entitlements.service import Actor, Grants
from worker.events import Dispute, LicenseKey, Payment, Refund, Subscription


def _grants(event: Event, ctx: Context) -> Grants:
    catalog = ctx.resources.get("catalog") or Catalog.empty()
    return Grants(ctx.session, ctx.settings, catalog, Actor.for_event(event.id))


def _report(ctx: Context, changes: int, about: str) -> None:
    if changes:
        ctx.log.info("%s: %d grant change(s)", about, changes)


@on("payment.succeeded", name="entitlements.payment", batched=True,
    prepare=payments.prepare_batch)
async def grant_on_payment(event: Event, ctx: Context) -> None:
    if isinstance(event.data, Payment):
        _report(ctx, await payments.on_payment(_grants(event, ctx), event.data), f"payment {event.data.payment_id}")


@on("refund.succeeded", name="entitlements.refund", batched=True,
    prepare=payments.prepare_batch)
async def revoke_on_refund(event: Event, ctx: Context) -> None:
    if isinstance(event.data, Refund):
        _report(ctx, await payments.on_refund(_grants(event, ctx), event.data), f"refund {event.data.refund_id}")


@on("dispute.lost", "dispute.accepted", "dispute.won", name="entitlements.dispute", batched=True,
    prepare=payments.prepare_batch)
async def follow_dispute(event: Event, ctx: Context) -> None:
    if isinstance(event.data, Dispute):
        changes = await payments.on_dispute(_grants(event, ctx), event.data, event.type)
        _report(ctx, changes, f"dispute {event.data.dispute_id}")


@on("subscription.*", name="entitlements.subscription", batched=True)
async def follow_subscription(event: Event, ctx: Context) -> None:
    if isinstance(event.data, Subscription):
        changes = await subscriptions.on_subscription(_grants(event, ctx), event.data, event.type, event.timestamp)
        _report(ctx, changes, f"subscription {event.data.subscription_id}")


@on("license_key.created", name="entitlements.license_key", batched=True,
    prepare=payments.prepare_batch)
async def record_dodo_key(event: Event, ctx: Context) -> None:
    if isinstance(event.data, LicenseKey):
        _report(ctx, await payments.on_license_key(_grants(event, ctx), event.data), f"Dodo key {event.data.id}")
