"""The events page's query: filter by status and type, search by what an operator has at hand.

A search term matches an event whose id is or starts with it, whose object (payment, refund,
subscription, ...) id is it, or whose stored envelope contains it (a customer id, an email, a
metadata value). The envelope match is a substring scan: fine for a console's occasional search,
not something to build an integration on (use the /v1 API's filters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements.models import AuditRow
from worker.store import EventRow

PAGE_SIZE = 50


@dataclass(frozen=True)
class EventPage:
    rows: Sequence[EventRow]
    page: int
    has_next: bool


async def find_events(session: AsyncSession, *, status: str | None = None, event_type: str | None = None,
                      search: str | None = None, page: int = 1, page_size: int = PAGE_SIZE) -> EventPage:
    """Newest first, `page_size` at a time (page 1 is the newest)."""
    query = select(EventRow).order_by(EventRow.received_at.desc(), EventRow.id.desc())
    if status:
        query = query.where(EventRow.status == status)
    if event_type:
        query = query.where(EventRow.type == event_type)
    if search:
        query = query.where(or_(EventRow.id.startswith(search, autoescape=True), EventRow.object_id == search,
                                EventRow.body.contains(search, autoescape=True)))
    query = query.offset((page - 1) * page_size).limit(page_size + 1)
    rows = list(await session.scalars(query))
    return EventPage(rows[:page_size], page, len(rows) > page_size)


async def event_types(session: AsyncSession) -> list[str]:
    """The types seen, for the filter's choices."""
    return list(await session.scalars(select(EventRow.type).distinct().order_by(EventRow.type)))


async def grant_changes(session: AsyncSession, event_id: str) -> list[AuditRow]:
    """What the event granted, revoked or restored: the grants' audit entries naming it."""
    query = select(AuditRow).where(AuditRow.event_id == event_id).order_by(AuditRow.id)
    return list(await session.scalars(query))
