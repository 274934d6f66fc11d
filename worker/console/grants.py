"""The grants pages of the console: `/console/grants` (search) and a grant's page, with its
actions Revoke, Restore and Deactivate (an activation).

Each action is the same service call the CLI makes (`Grants.revoke`/`restore`,
`Licenses.deactivate`), audited in the grant's trail as `console:<operator> (<address>)` and in
the console's own trail, then redirected back to the grant's page (POST-redirect-GET)."""

from __future__ import annotations

import dataclasses
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.types import ControllerRouterHandler

from worker.cli.hooks import delivery_summary
from worker.console import audit
from worker.console.auth import Operator
from worker.console.params import Form, SignedIn, Store
from worker.console.queries_grants import MAX_QUERY, Search, grant_page, search_grants
from worker.console.render import render, see_other
from worker.entitlements import outbox
from worker.entitlements.catalog import Catalog
from worker.entitlements.licenses import LicenseError
from worker.entitlements.models import GrantKind, GrantRow, GrantStatus
from worker.entitlements.service import Actor, Grants
from worker.entitlements.views import grant_json
from worker.runtime import Runtime
from worker.settings import Settings
from worker.web.licenses import _licenses

MAX_REASON = 500


def actor_of(operator: Operator) -> Actor:
    """The grant trail's actor of an operator's change (not `in_worker`: the worker tells the hooks)."""
    return Actor(f"console:{operator.name} ({operator.client})"[:255])


@get("/grants")
async def grants_list(request: Request, operator: SignedIn, db: Store, q: FromQuery[str] = "",
                      status: FromQuery[str] = "", kind: FromQuery[str] = "",
                      page: FromQuery[int] = 1) -> Response[Any]:
    if status and status not in GrantStatus.ALL:
        raise HTTPException(status_code=400, detail=f"status must be one of {', '.join(GrantStatus.ALL)}")
    if kind and kind not in GrantKind.ALL:
        raise HTTPException(status_code=400, detail=f"kind must be one of {', '.join(GrantKind.ALL)}")
    if len(q) > MAX_QUERY or page < 1 or page > 10_000:
        raise HTTPException(status_code=400, detail=f"the search is at most {MAX_QUERY} characters, "
                                                    "the page between 1 and 10000")
    search = Search(q=q.strip(), status=status or None, kind=kind or None, page=page)
    async with db.sessions() as session:
        rows, more = await search_grants(session, search)
    return render(request, "grants.html", grants=rows, more=more, q=search.q, status=status, kind=kind,
                  page=page, statuses=GrantStatus.ALL, kinds=GrantKind.ALL, title="Grants")


@get("/grants/{grant_id:str}")
async def grant_detail(request: Request, operator: SignedIn, state: State, db: Store,
                       grant_id: FromPath[str]) -> Response[Any]:
    settings: Settings = state.settings
    async with db.sessions() as session:
        found = await grant_page(session, grant_id)
    if found is None:
        raise HTTPException(status_code=404, detail=f"no grant {grant_id!r}")
    grant = found.grant
    # As the read API shows it: its metadata, and a fresh download link for an active file grant.
    shown = grant_json(grant, settings, settings.PUBLIC_URL or str(request.base_url))
    return render(request, "grant.html", grant=grant, audit=found.audit, activations=found.activations,
                  deliveries=[delivery_summary(d) for d in found.deliveries], retryable=outbox.RETRYABLE,
                  download_url=shown.get("file", {}).get("download_url"),
                  metadata=shown["metadata"], title=grant.id)


def _reason(form: dict[str, str], required: bool) -> str | None:
    reason = (form.get("reason") or "").strip()
    if required and not reason:
        raise HTTPException(status_code=400, detail="give a reason: it goes in the grant's audit trail")
    if len(reason) > MAX_REASON:
        raise HTTPException(status_code=400, detail=f"the reason is at most {MAX_REASON} characters")
    return reason or None


async def _change(state: State, db: Any, operator: Operator, grant_id: str, action: str,
                  reason: str | None) -> Response[Any]:
    """Revoke or restore in one transaction with both audit entries; back to the grant's page."""
    settings: Settings = state.settings
    async with db.sessions() as session, session.begin():
        grant = await session.get(GrantRow, grant_id)
        if grant is None:
            raise HTTPException(status_code=404, detail=f"no grant {grant_id!r}")
        service = Grants(session, settings, Catalog.empty(), actor_of(operator))
        if action == "revoke":
            changed = await service.revoke(grant, reason="manual", cause=service.actor.name,
                                           text=reason or "revoked by support")
        else:
            changed = await service.restore(grant, text=reason or "restored by support")
        audit.add(session, operator, f"grant.{action}", grant_id, reason if changed else f"unchanged: {reason}")
    return see_other(f"/console/grants/{grant_id}")


@post("/grants/{grant_id:str}/revoke")
async def revoke(state: State, db: Store, operator: SignedIn, form: Form, grant_id: FromPath[str]) -> Response[Any]:
    return await _change(state, db, operator, grant_id, "revoke", _reason(form, required=True))


@post("/grants/{grant_id:str}/restore")
async def restore(state: State, db: Store, operator: SignedIn, form: Form, grant_id: FromPath[str]) -> Response[Any]:
    return await _change(state, db, operator, grant_id, "restore", _reason(form, required=False))


@post("/grants/{grant_id:str}/activations/{activation_id:str}/deactivate")
async def deactivate(request: Request, state: State, db: Store, operator: SignedIn, form: Form,
                     grant_id: FromPath[str], activation_id: FromPath[str]) -> Response[Any]:
    """Free a seat as the licence API does (a Dodo-issued key at Dodo first)."""
    async with db.sessions() as session:
        grant = await session.get(GrantRow, grant_id)
    if grant is None or grant.kind != GrantKind.LICENSE_KEY or not grant.license_key:
        raise HTTPException(status_code=404, detail=f"no licence key grant {grant_id!r}")
    runtime: Runtime = state.runtime
    licenses = dataclasses.replace(_licenses(state), actor=actor_of(operator).name)
    try:
        await licenses.deactivate(grant.license_key, activation_id)
    except LicenseError as exc:
        return render(request, "error.html", status_code=exc.status, title="Not deactivated",
                      message=f"{exc.message} ({exc.code}). Nothing was changed.")
    await audit.record(runtime.db, operator, "grant.deactivate", grant_id, f"instance {activation_id}")
    return see_other(f"/console/grants/{grant_id}")


ROUTES: list[ControllerRouterHandler] = [grants_list, grant_detail, revoke, restore, deactivate]
