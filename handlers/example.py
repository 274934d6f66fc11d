"""An example handler module to copy.

Every handler is `async def name(event, ctx)`, registered with `@on(...)`. It may run more
than once for the same event (a worker can die mid-run), so make its effects idempotent:
key them on a domain id (`event.data.payment_id`) or pass `ctx.idempotency_key` along.
Raise to fail the run: it is retried with back-off, and after MAX_ATTEMPTS the event is
`dead` until `dodo-worker events replay ID`.
"""

from __future__ import annotations

from worker import Context, Event, on


# Import it by naming it: HANDLER_MODULES=handlers.example. It logs customers' emails, so it is
# never loaded by default.
# batched=True: this handler only logs, so the worker may run it for many events at once (see
# worker/registry.py). Leave it out for handlers that call other systems: they run on their own.
@on("payment.succeeded", batched=True)
async def log_payment(event: Event, ctx: Context) -> None:
    payment = event.data
    customer = payment.get("customer")
    ctx.log.info(
        "payment %s succeeded: %s %s from %s",
        payment.get("payment_id"),
        payment.get("total_amount"),
        payment.get("currency"),
        customer.get("email") if customer is not None else "unknown customer",
    )
