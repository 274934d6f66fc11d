"""The Litestar application of the `web` process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from litestar import Litestar
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.types import ControllerRouterHandler

from worker.registry import Registry
from worker.runtime import Runtime
from worker.settings import ConfigError, Settings
from worker.verify import Verifier
from worker.web.health import health, metrics_endpoint, ready
from worker.web.inbox_writer import InboxWriter
from worker.web.responses import error
from worker.web.webhooks import receive_webhook

ROUTES: list[ControllerRouterHandler] = [receive_webhook, health, ready, metrics_endpoint]


def _http_error(_request: Any, exc: HTTPException) -> Any:
    # Litestar's own errors (404, 405, ...) in the same `{"error": ...}` shape as ours.
    return error(exc.status_code, str(exc.detail))


def create_app(
    settings: Settings,
    registry: Registry | None = None,
    extra_routes: Sequence[ControllerRouterHandler] = (),
) -> Litestar:
    if not settings.webhook_secrets:
        raise ConfigError("DODO_PAYMENTS_WEBHOOK_KEY is not set: the receiver cannot verify webhooks")
    verifier = Verifier(settings.webhook_secrets)
    from worker.entitlements.catalog import load_catalog

    catalog = load_catalog(settings.entitlements_path)  # CatalogError (a ConfigError) stops start-up

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        runtime = Runtime.create(settings, registry)
        runtime.resources["catalog"] = catalog
        app.state.runtime = runtime
        writer = InboxWriter(runtime.db, runtime.redis, settings.QUEUE_NAME,
                             enqueue_window=settings.WEBHOOK_ENQUEUE_WINDOW_SECONDS,
                             on_enqueue_failed=partial(runtime.metrics.inc, "dodo_enqueue_failures_total"))
        app.state.inbox_writer = writer
        writer.start()
        runtime.metrics.start()
        try:
            yield
        finally:
            await writer.stop()
            await runtime.close()

    from worker.console.app import console_router, template_config
    from worker.web.api import api_routes

    return Litestar(
        route_handlers=[*ROUTES, *api_routes(), console_router(), *extra_routes],
        template_config=template_config(),
        lifespan=[lifespan],
        state=State({"verifier": verifier, "settings": settings, "catalog": catalog}),
        exception_handlers={HTTPException: _http_error},
        request_max_body_size=None,
        openapi_config=None,
        logging_config=None,
        debug=False,
    )
