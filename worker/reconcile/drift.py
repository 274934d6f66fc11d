"""Which subscriptions we grant something for, and in what state: the other half of the
subscription check.

The windowed scan lists subscriptions *created* in the window, so a subscription bought months ago
whose cancellation webhook was lost would never be looked at again. So each full scan also takes
the subscriptions whose grants are `active` or `suspended` here and compares them with Dodo: one
walk over Dodo's *active* subscriptions (a page per 100 live subscriptions, not per 100 ever made)
finds the ones that are active there; any of ours that is not, is fetched to learn its status.
"""

from __future__ import annotations

from sqlalchemy import select

from worker.entitlements.models import GrantRow, GrantSource, GrantStatus
from worker.store import Database


async def granted_subscriptions(db: Database) -> dict[str, str]:
    """subscription_id -> the state of its grants (`active` wins over `suspended`)."""
    query = (
        select(GrantRow.source_id, GrantRow.status)
        .where(GrantRow.source == GrantSource.SUBSCRIPTION,
               GrantRow.status.in_([GrantStatus.ACTIVE, GrantStatus.SUSPENDED]))
        .distinct()
    )
    found: dict[str, str] = {}
    async with db.sessions() as session:
        for subscription_id, status in (await session.execute(query)).all():
            if found.get(subscription_id) != GrantStatus.ACTIVE:
                found[subscription_id] = status
    return found
