"""The console's audit trail: every action an operator takes, with their name and address.

Add the entry in the same transaction as the change (`add`), so an action is never recorded
without happening or done without being recorded. Grants keep their own trail too
(worker/entitlements); the console's entry says who in the console asked for it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.console.models import ConsoleAuditRow
from worker.store import Database

if TYPE_CHECKING:
    from worker.console.auth import Operator


def add(session: AsyncSession, operator: Operator, action: str, target: str = "", detail: str | None = None) -> None:
    """Record `action` (e.g. "event.replay") on `target` (e.g. an event id) in `session`'s transaction."""
    session.add(ConsoleAuditRow(operator=operator.name, client=operator.client, action=action,
                                target=target[:255], detail=detail))


async def record(db: Database, operator: Operator, action: str, target: str = "", detail: str | None = None) -> None:
    """`add` in a transaction of its own (for actions that change nothing in SQL: sign-in, sign-out)."""
    async with db.sessions() as session, session.begin():
        add(session, operator, action, target, detail)


async def entries(session: AsyncSession, *, target: str | None = None, limit: int = 100) -> list[ConsoleAuditRow]:
    """The newest entries first, optionally only those about `target`."""
    query = select(ConsoleAuditRow).order_by(ConsoleAuditRow.id.desc()).limit(limit)
    if target is not None:
        query = query.where(ConsoleAuditRow.target == target)
    return list(await session.scalars(query))
