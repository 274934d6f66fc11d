"""Finding grants by the keys merchants and support know: customer, email, payment,
subscription, and the merchant's own ids in checkout metadata."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from worker.entitlements.models import AuditRow, DeliveryRow, GrantMetadataRow, GrantRow

MAX_RESULTS = 1000


@dataclass
class Filters:
    """Every filter given must match (AND)."""

    customer_id: str | None = None
    email: str | None = None
    payment_id: str | None = None
    subscription_id: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    status: str | None = None

    def selects_someone(self) -> bool:
        """At least one key that narrows to a customer (status alone would list everyone)."""
        return bool(self.customer_id or self.email or self.payment_id or self.subscription_id or self.metadata)


def parse_pairs(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings (CLI `--metadata`); ValueError names the bad one."""
    pairs: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def statement(filters: Filters, limit: int = MAX_RESULTS) -> Select[Any]:
    query = select(GrantRow)
    if filters.customer_id:
        query = query.where(GrantRow.customer_id == filters.customer_id)
    if filters.email:
        query = query.where(func.lower(GrantRow.email) == filters.email.strip().lower())
    if filters.payment_id:
        query = query.where(GrantRow.payment_id == filters.payment_id)
    if filters.subscription_id:
        query = query.where(GrantRow.subscription_id == filters.subscription_id)
    if filters.status:
        query = query.where(GrantRow.status == filters.status)
    for key, value in filters.metadata.items():
        meta = aliased(GrantMetadataRow)
        query = query.join(meta, (meta.grant_id == GrantRow.id) & (meta.key == key) & (meta.value == value))
    return query.order_by(GrantRow.created_at, GrantRow.id).limit(limit)


async def find_grants(session: AsyncSession, filters: Filters, limit: int = MAX_RESULTS) -> list[GrantRow]:
    return list(await session.scalars(statement(filters, limit)))


async def find_grant(session: AsyncSession, grant_id: str) -> GrantRow | None:
    return await session.get(GrantRow, grant_id)


async def audit_trail(session: AsyncSession, grant_id: str) -> list[AuditRow]:
    rows = await session.scalars(select(AuditRow).where(AuditRow.grant_id == grant_id).order_by(AuditRow.id))
    return list(rows)


async def deliveries_of(session: AsyncSession, grant_id: str) -> list[DeliveryRow]:
    rows = await session.scalars(
        select(DeliveryRow).where(DeliveryRow.grant_id == grant_id).order_by(DeliveryRow.created_at))
    return list(rows)
