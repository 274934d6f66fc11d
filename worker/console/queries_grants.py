"""What the console's grant pages read: a search over every key support is given, and one
grant with its trail, activations and hook deliveries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements import keys
from worker.entitlements.models import ActivationRow, AuditRow, DeliveryRow, GrantMetadataRow, GrantRow
from worker.entitlements.queries import audit_trail, deliveries_of

PER_PAGE = 50
MAX_QUERY = 320  # an email's longest


@dataclass(frozen=True)
class Search:
    q: str = ""
    status: str | None = None
    kind: str | None = None
    page: int = 1


def statement(search: Search) -> Any:
    """Grants matching `q` by email (any case), customer, payment, subscription, grant id,
    licence key (by its hash) or a metadata value; newest first, one page (and one more row,
    to know whether there is a next page)."""
    query = select(GrantRow)
    text = search.q.strip()
    if text:
        by_metadata = select(GrantMetadataRow.grant_id).where(GrantMetadataRow.value == text)
        query = query.where(or_(
            func.lower(GrantRow.email) == text.lower(),
            GrantRow.customer_id == text,
            GrantRow.payment_id == text,
            GrantRow.subscription_id == text,
            GrantRow.id == text,
            GrantRow.license_key_hash == keys.key_hash(text),
            GrantRow.id.in_(by_metadata),
        ))
    if search.status:
        query = query.where(GrantRow.status == search.status)
    if search.kind:
        query = query.where(GrantRow.kind == search.kind)
    offset = (max(search.page, 1) - 1) * PER_PAGE
    return query.order_by(GrantRow.created_at.desc(), GrantRow.id).offset(offset).limit(PER_PAGE + 1)


async def search_grants(session: AsyncSession, search: Search) -> tuple[list[GrantRow], bool]:
    """One page of matching grants, and whether another page follows."""
    rows = list(await session.scalars(statement(search)))
    return rows[:PER_PAGE], len(rows) > PER_PAGE


@dataclass
class GrantPage:
    grant: GrantRow
    audit: list[AuditRow]
    activations: list[ActivationRow]
    deliveries: list[DeliveryRow]


async def grant_page(session: AsyncSession, grant_id: str) -> GrantPage | None:
    grant = await session.get(GrantRow, grant_id)
    if grant is None:
        return None
    activations = list(await session.scalars(
        select(ActivationRow).where(ActivationRow.grant_id == grant_id).order_by(ActivationRow.created_at)))
    return GrantPage(grant, await audit_trail(session, grant_id), activations, await deliveries_of(session, grant_id))
