"""Refunds and disputes per payment, kept whether or not the payment's grants exist yet, so a
revocation that arrives first still wins: a grant created later reads them and starts revoked."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements.catalog import Catalog
from worker.entitlements.models import GrantRow, GrantStatus, RevocationRow
from worker.entitlements.service import Grants, Initial
from worker.entitlements.sql import TRANSACTION_INFO, insert_ignore
from worker.events import Payment
from worker.store.models import utcnow

REFUND, DISPUTE = "refund", "dispute"
FULL, PARTIAL, LOST, WON, ACCEPTED = "full", "partial", "lost", "won", "accepted"
# Dodo's `dispute_status` -> the state recorded. `accepted`: the merchant did not contest it and
# the money went back to the cardholder (Dodo's docs), as for `lost`; `opened`, `challenged`,
# `expired` and `cancelled` take nothing yet.
DISPUTE_STATES = {"dispute_lost": LOST, "dispute_accepted": ACCEPTED, "dispute_won": WON}
TAKEN = frozenset({LOST, ACCEPTED})  # dispute states that revoke


@dataclass(frozen=True)
class Seen:
    """A refund or dispute of a payment, as an event or a payment payload shows it."""

    cause: str  # refund, dispute
    cause_id: str
    state: str  # full, partial (refund); lost, accepted, won (dispute)


def describe(row: RevocationRow | Seen) -> str:
    return f"{row.cause} {row.cause_id} ({row.state})"


async def record(session: AsyncSession, payment_id: str, seen: Seen, event_id: str | None) -> None:
    """Remember it (once per refund or dispute; a dispute's state follows its latest news, except
    that `accepted` is final: an accepted dispute is over, so news after it, in whatever order it
    arrives, cannot give the money, or the access, back)."""
    session.info.get(PREFETCHED, {}).pop(payment_id, None)
    now = utcnow()
    inserted = await insert_ignore(session, RevocationRow, {
        "payment_id": payment_id, "cause": seen.cause, "cause_id": seen.cause_id, "state": seen.state,
        "event_id": event_id, "created_at": now, "updated_at": now,
    })
    if not inserted:
        await session.execute(
            update(RevocationRow)
            .where(RevocationRow.payment_id == payment_id, RevocationRow.cause == seen.cause,
                   RevocationRow.cause_id == seen.cause_id, RevocationRow.state != seen.state,
                   RevocationRow.state != ACCEPTED)
            .values(state=seen.state, event_id=event_id, updated_at=now))


PREFETCHED = "dodo_worker.revocations"  # session.info: payment id -> its revocations
TRANSACTION_INFO.append(PREFETCHED)


async def for_payment(session: AsyncSession, payment_id: str) -> list[RevocationRow]:
    """The payment's refunds and disputes (read under its lock, or prefetched under it)."""
    cached = session.info.get(PREFETCHED, {}).get(payment_id)
    if cached is not None:
        return list(cached)
    # Revocations are only ever written by Core statements (above), never left pending in the
    # session, so this read need not flush the session's pending audit rows first.
    with session.no_autoflush:
        rows = await session.scalars(
            select(RevocationRow).where(RevocationRow.payment_id == payment_id).order_by(RevocationRow.id))
    return list(rows)


async def prefetch(session: AsyncSession, payment_ids: list[str]) -> None:
    """Read the revocations of several payments in one query, for `for_payment` to answer from
    until this transaction ends or `record` changes one. Take the payments' locks first."""
    ids = sorted(set(payment_ids))
    if not ids:
        return
    with session.no_autoflush:
        rows = await session.scalars(
            select(RevocationRow).where(RevocationRow.payment_id.in_(ids)).order_by(RevocationRow.id))
    cache: dict[str, list[RevocationRow]] = session.info.setdefault(PREFETCHED, {})
    found: dict[str, list[RevocationRow]] = {payment_id: [] for payment_id in ids}
    for row in rows:
        found[row.payment_id].append(row)
    cache.update(found)


def blocker(rows: list[RevocationRow], catalog: Catalog, product_id: str) -> RevocationRow | None:
    """The first refund or dispute that takes this product's grants away, if any."""
    for row in rows:
        if row.cause == REFUND and (row.state == FULL or (
                row.state == PARTIAL and catalog.revokes_on_partial_refund(product_id))):
            return row
        if row.cause == DISPUTE and row.state in TAKEN:
            return row
    return None


def initial_for(rows: list[RevocationRow], catalog: Catalog, product_id: str) -> Initial | None:
    """How a grant of this payment starts when a refund or dispute came first (None: active)."""
    found = blocker(rows, catalog, product_id)
    if found is None:
        return None
    return Initial(status=GrantStatus.REVOKED, reason=found.cause, cause=found.cause_id,
                   text=f"granted revoked: {describe(found)} was seen before the grant")


async def apply(grants: Grants, payment_id: str, rows: list[RevocationRow] | None = None) -> int:
    """Revoke every grant of the payment that a recorded refund or dispute takes away. `rows`:
    the payment's revocations when the caller has just read them (under the payment's lock)."""
    rows = await for_payment(grants.session, payment_id) if rows is None else rows
    if not rows:
        return 0
    changed = 0
    for grant in await grants_of_payment(grants.session, payment_id):
        if grant.status == GrantStatus.REVOKED:
            continue
        found = blocker(rows, grants.catalog, grant.product_id)
        if found is not None:
            changed += await grants.revoke(grant, reason=found.cause, cause=found.cause_id, text=describe(found))
    return changed


async def dispute_won(grants: Grants, payment_id: str, dispute_id: str) -> int:
    """Give back what this dispute took (not what a refund or another dispute took). Nothing when
    the dispute is recorded accepted (final, see `record`): its revocations stand."""
    rows = await for_payment(grants.session, payment_id)
    if any(row.cause == DISPUTE and row.cause_id == dispute_id and row.state in TAKEN for row in rows):
        return await apply(grants, payment_id, rows)
    restored = 0
    for grant in await grants_of_payment(grants.session, payment_id):
        if grant.status != GrantStatus.REVOKED or grant.status_reason != DISPUTE or grant.status_cause != dispute_id:
            continue
        other = blocker(rows, grants.catalog, grant.product_id)
        if other is not None:
            await grants.reattribute(grant, reason=other.cause, cause=other.cause_id,
                                     text=f"dispute {dispute_id} won, but {describe(other)} still applies")
            continue
        restored += await grants.restore(grant, text=f"dispute {dispute_id} won")
    return restored


async def grants_of_payment(session: AsyncSession, payment_id: str) -> list[GrantRow]:
    rows = await session.scalars(select(GrantRow).where(GrantRow.payment_id == payment_id).order_by(GrantRow.id))
    return list(rows)


def seen_in_payment(payment: Payment) -> list[Seen]:
    """Refunds and disputes a payment payload already shows (it is the latest state at delivery)."""
    seen: list[Seen] = []
    full_listed = False
    for refund in payment.refunds or []:
        if refund.refund_id and refund.status in (None, "succeeded"):
            partial = bool(refund.is_partial)
            full_listed = full_listed or not partial
            seen.append(Seen(REFUND, refund.refund_id, PARTIAL if partial else FULL))
    if payment.refund_status == FULL and not full_listed:
        seen.append(Seen(REFUND, f"{payment.payment_id}:refund_status", FULL))
    for dispute in payment.disputes or []:
        state = DISPUTE_STATES.get(str(dispute.get("dispute_status") or ""))
        dispute_id = dispute.get("dispute_id")
        if dispute_id and state is not None:
            seen.append(Seen(DISPUTE, str(dispute_id), state))
    return seen
