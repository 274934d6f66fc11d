"""Builders of realistic Dodo objects (shapes as in the OpenAPI spec's full responses)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from worker.testing.fakedodo.server import FakeDodo, iso

BILLING = {"city": "San Francisco", "country": "US", "state": "CA", "street": "1 Market St", "zipcode": "94105"}


def customer(n: int) -> dict[str, Any]:
    return {"customer_id": f"cus_{n:06d}", "email": f"buyer{n}@example.com", "name": f"Buyer {n}"}


def payment(n: int, *, created_at: datetime, status: str = "succeeded", product_id: str = "pdt_fake_ebook",
            metadata: dict[str, Any] | None = None, business_id: str = "bus_fake",
            subscription_id: str | None = None) -> dict[str, Any]:
    return {
        "payment_id": f"pay_{n:06d}",
        "business_id": business_id,
        "brand_id": "bra_fake",
        "status": status,
        "total_amount": 2000,
        "tax": 0,
        "currency": "USD",
        "settlement_amount": 2000,
        "settlement_currency": "USD",
        "settlement_tax": 0,
        "created_at": iso(created_at),
        "updated_at": iso(created_at),
        "customer": customer(n),
        "billing": BILLING,
        "metadata": metadata if metadata is not None else {"order_id": f"ord_{n:06d}"},
        "product_cart": [{"product_id": product_id, "quantity": 1}],
        "refunds": [],
        "disputes": [],
        "digital_products_delivered": False,
        "payment_method": "card" if status == "succeeded" else None,
        "payment_method_type": None,
        "subscription_id": subscription_id,
        "checkout_session_id": f"cks_{n:06d}",
        "card_last_four": "4242",
        "card_network": "VISA",
        "card_type": "CREDIT",
        "card_issuing_country": "US",
        "discount_id": None,
        "error_code": None if status == "succeeded" else "CARD_DECLINED",
        "error_message": None if status == "succeeded" else "card declined",
        "payment_link": None,
    }


def refund(pay: dict[str, Any], n: int, *, created_at: datetime, status: str = "succeeded") -> dict[str, Any]:
    return {
        "refund_id": f"ref_{n:06d}",
        "payment_id": pay["payment_id"],
        "business_id": pay["business_id"],
        "status": status,
        "created_at": iso(created_at),
        "is_partial": False,
        "amount": pay["total_amount"],
        "currency": pay["currency"],
        "reason": "customer asked",
        "customer": pay["customer"],
    }


def dispute(pay: dict[str, Any], n: int, *, created_at: datetime, status: str = "dispute_lost") -> dict[str, Any]:
    return {
        "dispute_id": f"dsp_{n:06d}",
        "payment_id": pay["payment_id"],
        "business_id": pay["business_id"],
        "amount": str(pay["total_amount"]),
        "currency": pay["currency"],
        "dispute_status": status,
        "dispute_stage": "dispute",
        "created_at": iso(created_at),
        "customer": pay["customer"],
        "reason": "fraudulent",
        "remarks": None,
    }


def subscription(n: int, *, created_at: datetime, status: str = "active", product_id: str = "pdt_fake_pro",
                 metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "subscription_id": f"sub_{n:06d}",
        "product_id": product_id,
        "status": status,
        "created_at": iso(created_at),
        "customer": customer(n),
        "billing": BILLING,
        "metadata": metadata if metadata is not None else {"order_id": f"sord_{n:06d}"},
        "recurring_pre_tax_amount": 1000,
        "tax_inclusive": False,
        "currency": "USD",
        "quantity": 1,
        "trial_period_days": 0,
        "subscription_period_interval": "Year",
        "subscription_period_count": 1,
        "payment_frequency_interval": "Month",
        "payment_frequency_count": 1,
        "next_billing_date": iso(created_at + timedelta(days=30)),
        "previous_billing_date": iso(created_at),
        "cancel_at_next_billing_date": False,
        "cancelled_at": iso(created_at + timedelta(days=1)) if status == "cancelled" else None,
        "on_demand": False,
        "addons": [],
        "meters": [],
        "discount_id": None,
        "discount_cycles_remaining": None,
        "expires_at": None,
    }


def populate(fake: FakeDodo, *, payments: int, failed: int = 0, refunds: int = 0, disputes: int = 0,
             subscriptions: int = 0, now: datetime | None = None, spread: timedelta = timedelta(hours=6),
             product_id: str = "pdt_fake_ebook", subscription_product_id: str = "pdt_fake_pro",
             ) -> dict[str, list[dict[str, Any]]]:
    """Succeeded and failed payments spread over the last `spread`, refunds and lost disputes of
    the first succeeded ones, and active subscriptions. Returns what it added, by collection."""
    now = now or datetime.now(UTC) - timedelta(minutes=3)  # older than a scheduled scan's settle time
    made: dict[str, list[dict[str, Any]]] = {"payments": [], "failed": [], "refunds": [], "disputes": [],
                                             "subscriptions": []}
    total = payments + failed
    step = spread / max(total, 1)
    for i in range(total):
        status = "succeeded" if i < payments else "failed"
        obj = fake.add("payments", payment(i, created_at=now - step * (i + 1), status=status,
                                             product_id=product_id))
        made["payments" if status == "succeeded" else "failed"].append(obj)
    for i, pay in enumerate(made["payments"][:refunds]):
        made["refunds"].append(fake.add("refunds", refund(pay, i, created_at=now - step * i / 2)))
        pay["refunds"].append({k: v for k, v in made["refunds"][-1].items() if k != "customer"})
    for i, pay in enumerate(made["payments"][refunds:refunds + disputes]):
        made["disputes"].append(fake.add("disputes", dispute(pay, i, created_at=now - step * i / 2)))
    sub_step = spread / max(subscriptions, 1)
    for i in range(subscriptions):
        made["subscriptions"].append(fake.add("subscriptions", subscription(i, created_at=now - sub_step * (i + 1),
                                                                             product_id=subscription_product_id)))
    return made


def license_key(key_id: str, key: str, *, product_id: str, customer_id: str, payment_id: str | None = None,
                subscription_id: str | None = None, activations_limit: int | None = 3, status: str = "active",
                expires_at: datetime | None = None, business_id: str = "bus_fake",
                created_at: datetime | None = None) -> dict[str, Any]:
    """A licence key as Dodo holds it (`LicenseKeyResponse`), for `FakeDodo.licenses.add`."""
    return {
        "id": key_id, "key": key, "business_id": business_id, "brand_id": business_id, "status": status,
        "customer_id": customer_id, "product_id": product_id, "payment_id": payment_id,
        "subscription_id": subscription_id, "activations_limit": activations_limit, "instances_count": 0,
        "expires_at": iso(expires_at) if expires_at else None, "source": "auto",
        "created_at": iso(created_at or datetime.now(UTC)),
    }
