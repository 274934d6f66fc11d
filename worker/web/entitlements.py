"""`GET /v1/entitlements?customer_id=…&email=…&payment_id=…&subscription_id=…&metadata.KEY=VALUE`:
what a customer may use, for the merchant's app (bearer WORKER_API_TOKEN). Filters are AND-ed."""

from __future__ import annotations

import logging

from litestar import Request, Response, get
from litestar.datastructures import State
from sqlalchemy.exc import SQLAlchemyError

from worker.entitlements.models import GrantStatus
from worker.entitlements.queries import Filters, find_grants
from worker.entitlements.views import grants_json
from worker.runtime import Runtime
from worker.settings import Settings
from worker.web.auth import check_bearer
from worker.web.responses import error, json_response

log = logging.getLogger("dodo_worker.api")

_KEYS = ("customer_id", "email", "payment_id", "subscription_id", "status")
_NEED = "give at least one of customer_id, email, payment_id, subscription_id, metadata.KEY=VALUE"
MAX_METADATA_FILTERS = 5  # each is a join; more than a few is never a real lookup


def filters_from(request: Request) -> Filters | str:
    """The filters of the query string, or what is wrong with it."""
    filters = Filters()
    for name, value in request.query_params.items():
        if name.startswith("metadata.") and len(name) > len("metadata."):
            filters.metadata[name.removeprefix("metadata.")] = value
        elif name in _KEYS:
            setattr(filters, name, value)
        else:
            return f"unknown filter {name!r}; {_NEED}"
    if len(filters.metadata) > MAX_METADATA_FILTERS:
        return f"at most {MAX_METADATA_FILTERS} metadata filters"
    if filters.status is not None and filters.status not in GrantStatus.ALL:
        return f"status must be one of {', '.join(GrantStatus.ALL)}"
    if not filters.selects_someone():
        return _NEED
    return filters


@get("/v1/entitlements")
async def list_entitlements(request: Request, state: State) -> Response[bytes]:
    settings: Settings = state.settings
    denied = check_bearer(request, settings)
    if denied is not None:
        return denied
    filters = filters_from(request)
    if isinstance(filters, str):
        return error(400, filters)
    runtime: Runtime = state.runtime
    try:
        async with runtime.db.sessions() as session:
            rows = await find_grants(session, filters)
            # PUBLIC_URL when set: behind a proxy the request's own host may be an internal one.
            base = settings.PUBLIC_URL or str(request.base_url)
            found = await grants_json(session, rows, settings, base_url=base)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("entitlements lookup failed: %s", type(exc).__name__)
        return error(503, "store unavailable")
    return json_response({"entitlements": found})
