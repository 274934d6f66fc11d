"""Link subscription payments processed before schema 0004 to their subscriptions' grants.

Until then a subscription's first payment was not remembered (`subscriptions.link_payment`), so
its refund or lost dispute did not reach the grants. `dodo-worker grants link-payments` reads the
processed `payment.succeeded` events of the inbox and links each subscription payment not linked
yet, through `link_payment` itself: a refund or dispute already recorded for it is applied then.
Safe to run again: a payment already linked is skipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import select

from worker.entitlements.catalog import Catalog
from worker.entitlements.models import SubscriptionPaymentRow
from worker.entitlements.service import Actor, Grants
from worker.entitlements.subscriptions import link_payment, subscriptions_of
from worker.events import Event, Payment
from worker.settings import Settings
from worker.store import Database, EventRow, EventStatus

PAGE = 500


@dataclass
class LinkReport:
    payments: int = 0  # subscription payments found in the inbox
    linked: int = 0  # of them, linked now (the others were already)
    changes: int = 0  # grant changes that followed (refunds and disputes applied)


async def link_stored_payments(db: Database, settings: Settings, catalog: Catalog) -> LinkReport:
    report = LinkReport()
    after = ""
    actor = Actor.cli()
    while True:
        async with db.sessions() as session:
            page = (await session.execute(
                select(EventRow.id, EventRow.body, EventRow.source)
                .where(EventRow.type == "payment.succeeded", EventRow.status == EventStatus.PROCESSED,
                       EventRow.id > after)
                .order_by(EventRow.id).limit(PAGE))).all()
        if not page:
            return report
        after = page[-1].id
        for event_id, body, source in page:
            payment = _payment(event_id, body, source)
            if payment is None or not payment.payment_id or not subscriptions_of(payment):
                continue
            report.payments += 1
            async with db.sessions() as session, session.begin():
                if await session.get(SubscriptionPaymentRow, payment.payment_id) is not None:
                    continue
                grants = Grants(session, settings, catalog, Actor(actor.name, event_id))
                report.changes += await link_payment(grants, payment)
                report.linked += 1


def _payment(event_id: str, body: str, source: str) -> Payment | None:
    try:
        envelope = json.loads(body)
    except ValueError:
        return None
    if not isinstance(envelope, dict):
        return None
    data = Event.from_envelope(event_id, envelope, source=source).data
    return data if isinstance(data, Payment) and data.status == "succeeded" else None
