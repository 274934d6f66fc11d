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


GRANT_PREFIX = "grt_"
MIN_PREFIX = 4  # characters after `grt_`, as git asks of an abbreviated commit


class AmbiguousId(LookupError):
    """An abbreviated id that more than one row starts with."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        self.prefix, self.matches = prefix, matches
        more = ", ..." if len(matches) > 4 else ""
        super().__init__(f"{prefix!r} is ambiguous: it starts {', '.join(matches[:4])}{more}")


def _like_prefix(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


async def resolve_id(session: AsyncSession, model: Any, text: str, prefix: str) -> str | None:
    """The full id of the one `model` row whose id is `text` or starts with it (`prefix` may be
    left out: `3fa9c1` is `grt_3fa9c1`); None when none does. AmbiguousId when several do."""
    wanted = text.strip()
    if not wanted.startswith(prefix):
        wanted = prefix + wanted
    column = model.id
    if await session.scalar(select(column).where(column == wanted)) is not None:
        return wanted
    if len(wanted) - len(prefix) < MIN_PREFIX:
        return None
    found = list(await session.scalars(
        select(column).where(column.like(_like_prefix(wanted), escape="\\")).order_by(column).limit(5)))
    if len(found) > 1:
        raise AmbiguousId(text, found)
    return found[0] if found else None


async def find_grant_by_prefix(session: AsyncSession, text: str) -> GrantRow | None:
    """The grant `text` names, by its id or a unique start of it (see `resolve_id`)."""
    grant_id = await resolve_id(session, GrantRow, text, GRANT_PREFIX)
    return await session.get(GrantRow, grant_id) if grant_id is not None else None


async def audit_trail(session: AsyncSession, grant_id: str) -> list[AuditRow]:
    rows = await session.scalars(select(AuditRow).where(AuditRow.grant_id == grant_id).order_by(AuditRow.id))
    return list(rows)


async def deliveries_of(session: AsyncSession, grant_id: str) -> list[DeliveryRow]:
    rows = await session.scalars(
        select(DeliveryRow).where(DeliveryRow.grant_id == grant_id).order_by(DeliveryRow.created_at))
    return list(rows)
