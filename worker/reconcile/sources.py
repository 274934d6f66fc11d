"""What reconciliation reads from Dodo, and which event each object stands for.

Each `Source` is one list endpoint, the filter that selects objects worth an event, and how a
missing event is made: its type, its deterministic id (so that two scans, or a scan and a
retry, can never create two), and the full object to fetch (list items lack fields handlers
need: a payment item has no `product_cart`, a refund item no `customer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Dodo's subscription status -> the event that announces it. `pending` grants nothing yet.
SUBSCRIPTION_EVENTS = {
    "active": "subscription.active",
    "on_hold": "subscription.on_hold",
    "paused": "subscription.paused",
    "past_due": "subscription.past_due",
    "cancelled": "subscription.cancelled",
    "expired": "subscription.expired",
    "failed": "subscription.failed",
}
# A subscription we never heard of that has already ended granted nothing: nothing to repair.
ENDED_STATUSES = frozenset({"cancelled", "expired", "failed"})


@dataclass(frozen=True)
class Source:
    kind: str  # payment, refund, dispute, subscription: the `kind` of a repaired item
    list_path: str
    id_field: str
    detail_path: str  # with {id}
    payload_type: str
    event_type: str | None = None  # None: chosen per object (subscriptions)
    filters: dict[str, str] = field(default_factory=dict)
    # An object whose events all settled `ignored` still lacks its handlers' work: see ACCEPTED_DISPUTES.
    redo_ignored: bool = False

    def object_id(self, item: dict[str, Any]) -> str | None:
        value = item.get(self.id_field)
        return str(value) if isinstance(value, str | int) and str(value) else None


PAYMENTS = Source("payment", "/payments", "payment_id", "/payments/{id}", "Payment",
                  event_type="payment.succeeded", filters={"status": "succeeded"})
REFUNDS = Source("refund", "/refunds", "refund_id", "/refunds/{id}", "Refund",
                 event_type="refund.succeeded", filters={"status": "succeeded"})
DISPUTES = Source("dispute", "/disputes", "dispute_id", "/disputes/{id}", "Dispute",
                  event_type="dispute.lost", filters={"dispute_status": "dispute_lost"})
# Accepted (not contested): the money went back to the cardholder, as for a lost one. A list of
# its own, since `dispute_status` takes one value. Before dodo-worker handled dispute.accepted its
# webhooks settled `ignored` with no handler run; such a dispute is repaired too (once: the
# synthetic event's id is deterministic), so a scan over that time revokes what they left valid.
ACCEPTED_DISPUTES = Source("dispute", "/disputes", "dispute_id", "/disputes/{id}", "Dispute",
                           event_type="dispute.accepted", filters={"dispute_status": "dispute_accepted"},
                           redo_ignored=True)
SUBSCRIPTIONS = Source("subscription", "/subscriptions", "subscription_id", "/subscriptions/{id}",
                       "Subscription")

# Payments first: a refund or dispute of a payment repaired in the same scan is queued after it.
ALL_SOURCES = (PAYMENTS, REFUNDS, DISPUTES, ACCEPTED_DISPUTES, SUBSCRIPTIONS)
KINDS = tuple(dict.fromkeys(s.kind for s in ALL_SOURCES))


def synthetic_event_id(event_type: str, object_id: str, discriminator: str | None = None) -> str:
    """`rec_payment.succeeded_pay_123`: the same object and state always give the same id."""
    base = f"rec_{event_type}_{object_id}"
    return f"{base}_{discriminator}" if discriminator else base
