"""The hooks page of the console: `/console/hooks`, the outbox's deliveries by status, newest
first, with "Retry" on a failed or refused one (the CLI's `hooks retry`, `outbox.retry`)."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.exceptions import HTTPException
from litestar.params import FromPath, FromQuery
from litestar.types import ControllerRouterHandler
from sqlalchemy import func, select

from worker.cli.hooks import STATUSES, delivery_summary
from worker.console import audit
from worker.console.params import Form, SignedIn, Store
from worker.console.render import render, see_other
from worker.entitlements import outbox
from worker.entitlements.models import DeliveryRow

PER_PAGE = 50


@get("/hooks")
async def hooks_list(request: Request, operator: SignedIn, db: Store, status: FromQuery[str] = "",
                     page: FromQuery[int] = 1) -> Response[Any]:
    if status and status not in STATUSES:
        raise HTTPException(status_code=400, detail=f"status must be one of {', '.join(STATUSES)}")
    if page < 1 or page > 10_000:
        raise HTTPException(status_code=400, detail="the page is between 1 and 10000")
    query = select(DeliveryRow).order_by(DeliveryRow.created_at.desc(), DeliveryRow.id)
    if status:
        query = query.where(DeliveryRow.status == status)
    async with db.sessions() as session:
        rows = list(await session.scalars(query.offset((page - 1) * PER_PAGE).limit(PER_PAGE + 1)))
        counts = dict((await session.execute(
            select(DeliveryRow.status, func.count()).group_by(DeliveryRow.status))).tuples().all())
    return render(request, "hooks.html", deliveries=[delivery_summary(r) for r in rows[:PER_PAGE]],
                  more=len(rows) > PER_PAGE, status=status, page=page, statuses=STATUSES,
                  counts={name: counts.get(name, 0) for name in STATUSES}, retryable=outbox.RETRYABLE,
                  title="Hook deliveries")


def _back(form: dict[str, str]) -> str:
    """Where the Retry form came from (a console page), else the hooks page."""
    target = form.get("back") or ""
    if target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/hooks"


@post("/hooks/{delivery_id:str}/retry")
async def retry(db: Store, operator: SignedIn, form: Form, delivery_id: FromPath[str]) -> Response[Any]:
    async with db.sessions() as session, session.begin():
        retried = await outbox.retry(session, [delivery_id])
        if not retried:
            raise HTTPException(status_code=409, detail=f"no failed or refused delivery {delivery_id!r}: "
                                                        "only those can be retried")
        audit.add(session, operator, "hook.retry", delivery_id)
    return see_other(_back(form))


ROUTES: list[ControllerRouterHandler] = [hooks_list, retry]
