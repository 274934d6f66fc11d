"""Typed, lenient views of Dodo's webhook envelope and the payloads handlers use most.

Real payloads drift from any schema, so every model keeps unknown fields (`extra="allow"`),
almost every field is optional, and a payload that still fails its typed model falls back to
the untyped `Payload`: a correctly signed event is never rejected for its shape.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

Metadata = dict[str, Any]


class Payload(BaseModel):
    """Any `data` object: every field is kept and readable as an attribute."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    payload_type: str | None = None

    def get(self, key: str, default: Any = None) -> Any:
        """A field by name, declared or not, like `dict.get`."""
        return getattr(self, key, default)


class Customer(Payload):
    customer_id: str | None = None
    email: str | None = None
    name: str | None = None
    metadata: Metadata | None = None


class CartItem(Payload):
    product_id: str
    # As sent: Dodo sends a positive integer, but anything else ("3", 2.5, null) is kept as it
    # came, so the payment still parses and the entitlements refuse the order by name instead of
    # guessing (worker/entitlements/cart.py).
    quantity: int | Any = 1


class RefundItem(Payload):
    refund_id: str | None = None
    payment_id: str | None = None
    is_partial: bool | None = None
    status: str | None = None
    amount: int | None = None
    created_at: datetime | None = None


class Addon(Payload):
    addon_id: str
    quantity: int | Any = 1  # as sent, like a cart line's (worker/entitlements/cart.py checks it)


class Payment(Payload):
    payment_id: str | None = None
    status: str | None = None
    business_id: str | None = None
    customer: Customer | None = None
    metadata: Metadata | None = None
    product_cart: list[CartItem] | None = None
    subscription_id: str | None = None
    checkout_session_id: str | None = None
    refund_status: str | None = None
    refunds: list[RefundItem] | None = None
    disputes: list[dict[str, Any]] | None = None
    total_amount: int | None = None
    currency: str | None = None
    charge_type: str | None = None
    created_at: datetime | None = None


class Refund(Payload):
    refund_id: str | None = None
    payment_id: str | None = None
    business_id: str | None = None
    customer: Customer | None = None
    is_partial: bool | None = None
    status: str | None = None
    amount: int | None = None
    currency: str | None = None
    reason: str | None = None
    metadata: Metadata | None = None
    created_at: datetime | None = None


class Dispute(Payload):
    dispute_id: str | None = None
    payment_id: str | None = None
    business_id: str | None = None
    customer: Customer | None = None
    amount: str | None = None
    currency: str | None = None
    dispute_stage: str | None = None
    dispute_status: str | None = None
    created_at: datetime | None = None


class Subscription(Payload):
    subscription_id: str | None = None
    product_id: str | None = None
    status: str | None = None
    customer: Customer | None = None
    metadata: Metadata | None = None
    addons: list[Addon] | None = None
    quantity: int | None = None
    payment_id: str | None = None
    next_billing_date: datetime | None = None
    expires_at: datetime | None = None
    cancelled_at: datetime | None = None
    created_at: datetime | None = None


class LicenseKey(Payload):
    id: str | None = None
    key: str | None = None
    product_id: str | None = None
    customer_id: str | None = None
    payment_id: str | None = None
    subscription_id: str | None = None
    status: str | None = None
    activations_limit: int | None = None
    instances_count: int | None = None
    expires_at: datetime | None = None
    created_at: datetime | None = None


class Payout(Payload):
    payout_id: str | None = None
    business_id: str | None = None
    status: str | None = None
    amount: int | None = None
    currency: str | None = None
    fee: int | None = None
    tax: int | None = None
    refunds: int | None = None
    chargebacks: int | None = None
    payment_method: str | None = None
    remarks: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


class Credit(Payload):
    """A credit ledger entry (`credit.added`, `credit.deducted`, ...) or a `credit.balance_low` alert.

    Credit amounts are decimal strings in Dodo's API ("1000", "12.5").
    """

    id: str | None = None
    credit_entitlement_id: str | None = None
    credit_entitlement_name: str | None = None
    customer_id: str | None = None
    subscription_id: str | None = None
    grant_id: str | None = None
    transaction_type: str | None = None
    is_credit: bool | None = None
    amount: str | None = None
    balance_before: str | None = None
    balance_after: str | None = None
    overage_before: str | None = None
    overage_after: str | None = None
    available_balance: str | None = None
    threshold_amount: str | None = None
    threshold_percent: int | None = None
    reference_id: str | None = None
    reference_type: str | None = None
    metadata: Metadata | None = None
    created_at: datetime | None = None


class AbandonedCheckout(Payload):
    payment_id: str | None = None
    customer_id: str | None = None
    status: str | None = None
    abandonment_reason: str | None = None
    recovered_payment_id: str | None = None
    abandoned_at: datetime | None = None


class Dunning(Payload):
    subscription_id: str | None = None
    customer_id: str | None = None
    payment_id: str | None = None
    status: str | None = None
    trigger_state: str | None = None
    created_at: datetime | None = None


class GrantedLicenseKey(Payload):
    id: str | None = None
    key: str | None = None
    status: str | None = None
    activations_limit: int | None = None
    activations_used: int | None = None
    expires_at: datetime | None = None


class EntitlementGrant(Payload):
    id: str | None = None
    entitlement_id: str | None = None
    customer_id: str | None = None
    payment_id: str | None = None
    subscription_id: str | None = None
    integration_type: str | None = None
    status: str | None = None
    license_key: GrantedLicenseKey | None = None
    error_code: str | None = None
    error_message: str | None = None
    revocation_reason: str | None = None
    metadata: Metadata | None = None
    delivered_at: datetime | None = None
    revoked_at: datetime | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None


PAYLOAD_MODELS: dict[str, type[Payload]] = {
    "payment": Payment,
    "refund": Refund,
    "dispute": Dispute,
    "subscription": Subscription,
    "license_key": LicenseKey,
    "payout": Payout,
    "credit": Credit,
    "abandoned_checkout": AbandonedCheckout,
    "dunning": Dunning,
    "entitlement_grant": EntitlementGrant,
}


def parse_payload(event_type: str, data: Any) -> Payload:
    """The typed payload for `event_type`, or the untyped one when the data does not fit it."""
    if not isinstance(data, dict):
        return Payload.model_validate({"value": data})
    model = PAYLOAD_MODELS.get(event_type.split(".", 1)[0], Payload)
    try:
        return model.model_validate(data)
    except ValidationError:
        return Payload.model_validate(data)


class Event(BaseModel):
    """What a handler receives: `event.id`, `event.type`, `event.data` (typed payload)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    id: str
    type: str
    data: Payload
    business_id: str | None = None
    timestamp: str | None = None
    source: str = "webhook"
    raw: dict[str, Any]

    @classmethod
    def from_envelope(cls, event_id: str, envelope: dict[str, Any], source: str = "webhook") -> Event:
        event_type = str(envelope.get("type"))
        business_id = envelope.get("business_id")
        timestamp = envelope.get("timestamp")
        return cls(
            id=event_id,
            type=event_type,
            data=parse_payload(event_type, envelope.get("data")),
            business_id=business_id if isinstance(business_id, str) else None,
            timestamp=timestamp if isinstance(timestamp, str) else None,
            source=source,
            raw=envelope,
        )


def object_id(event_type: str, data: Any) -> str | None:
    """The Dodo id of the object an event is about (payment, refund, ...), for lookups."""
    if not isinstance(data, dict):
        return None
    for key in OBJECT_ID_KEYS.get(event_type.split(".", 1)[0], ()):
        value = data.get(key)
        if value is not None:
            break
    else:
        value = data.get("id")
    return str(value)[:128] if isinstance(value, str | int) else None


# Where each family keeps its object's id, tried in order (then `id`). An abandoned checkout is
# known by the payment that was abandoned, a dunning run by its subscription, a credit alert
# (`credit.balance_low`, no ledger entry) by its credit entitlement.
OBJECT_ID_KEYS: dict[str, tuple[str, ...]] = {
    "payment": ("payment_id",),
    "refund": ("refund_id",),
    "dispute": ("dispute_id",),
    "subscription": ("subscription_id",),
    "license_key": ("id",),
    "payout": ("payout_id",),
    "credit": ("id", "credit_entitlement_id"),
    "abandoned_checkout": ("payment_id",),
    "dunning": ("subscription_id",),
    "entitlement_grant": ("id",),
}
