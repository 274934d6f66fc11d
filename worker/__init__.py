"""dodo-worker: act on Dodo Payments webhooks, reliably.

    from worker import on

    @on("payment.succeeded")
    async def welcome(event, ctx):
        ctx.log.info("paid: %s", event.data.payment_id)
"""

from worker.context import Context
from worker.entitlements.hooks import on_entitlement
from worker.errors import PermanentError
from worker.events import Event
from worker.registry import Registry, RegistryError, default_registry, on

# dodo_worker.check_packages looks for this: it tells our package from another called `worker`.
DODO_WORKER_PACKAGE = True

__all__ = ["Context", "Event", "PermanentError", "Registry", "RegistryError", "default_registry", "on",
           "on_entitlement"]
