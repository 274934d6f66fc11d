"""Errors a handler may raise to tell dispatch what a failure means."""

from __future__ import annotations


class PermanentError(Exception):
    """Retrying cannot fix this (the payload itself is wrong): the run goes `dead` at once, with
    this message as the event's reason, instead of spending its attempts. After fixing the cause
    (a catalog limit, a handler), `dodo-worker events replay ID` runs it again.

        from worker import PermanentError

        @on("payment.succeeded")
        async def ship(event, ctx):
            if not event.data.customer:
                raise PermanentError(f"payment {event.data.payment_id} has no customer")
    """
