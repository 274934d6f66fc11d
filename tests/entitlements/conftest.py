"""Fixtures for entitlement tests (reused by the licence, download, hook and reconcile tests).

- `catalog_path`: an entitlements.toml in tmp_path (see `write_catalog` to add hooks or options);
- `registry`: the test's fresh registry with the built-in handlers of handlers/entitlements.py;
- `ent_stack`: the running stack with that catalog;
- `dodo_settings`: the test kit's `dodo` (tests/conftest.py) with that catalog, and
  `send_processed(dodo, TYPE, data)`: send through the kit, check the event was processed;
- payload builders `payment`, `refund`, `dispute`, `subscription`, `license_key` (bundled samples
  with the fields that matter replaced) and `envelope` (to set the event timestamp);
- `entitlements(stack, **filters)`: GET /v1/entitlements with the bearer token.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import Stack
from worker.registry import Registry, default_registry
from worker.samples import load_sample
from worker.testing.kit import Dodo, SentEvent

PRODUCT = "pdt_pro"  # licence key (2 activations, prefix ACME), files/guide.pdf, optional hooks
KEY_ONLY = "pdt_key"  # licence key only (1 activation): subscriptions use it
FILE_ONLY = "pdt_ebook"  # files/guide.pdf only
SEAT = "adn_seat"  # add-on: each unit adds one activation
CUSTOMER = "cus_test_1"
EMAIL = "buyer@example.com"
GUIDE_BYTES = b"%PDF-1.4\n% dodo-worker test guide\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def write_catalog(directory: Path, *, hooks: list[str] | None = None, extra: str = "",
                  revoke_on_partial_refund: bool = False) -> Path:
    """An entitlements.toml (and files/guide.pdf) in `directory`; its path."""
    (directory / "files").mkdir(parents=True, exist_ok=True)
    (directory / "files" / "guide.pdf").write_bytes(GUIDE_BYTES)
    hook_line = f"hooks = {json.dumps(hooks)}\n" if hooks else ""
    text = (
        f"revoke_on_partial_refund = {str(revoke_on_partial_refund).lower()}\n\n"
        f"[products.{PRODUCT}]\n"
        'name = "Acme Pro"\n'
        'license_key = { activations_limit = 2, prefix = "ACME" }\n'
        'files = ["files/guide.pdf"]\n'
        f"{hook_line}\n"
        f"[products.{KEY_ONLY}]\n"
        "license_key = { activations_limit = 1 }\n\n"
        f"[products.{FILE_ONLY}]\n"
        'files = ["files/guide.pdf"]\n\n'
        f"[addons.{SEAT}]\n"
        "seats = 1\n"
        f"{extra}"
    )
    path = directory / "entitlements.toml"
    path.write_text(text)
    return path


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    return write_catalog(tmp_path)


def entitlement_handlers() -> list[Any]:
    import handlers.entitlements as module

    return [h for h in default_registry if h.func.__module__ == module.__name__]


@pytest.fixture
def registry() -> Registry:
    """A fresh registry holding the built-in entitlement handlers (tests may add their own)."""
    fresh = Registry()
    for handler in entitlement_handlers():
        fresh.add(handler.func, handler.patterns, name=handler.name, batched=handler.batched,
                  prepare=handler.prepare)
    return fresh


@pytest.fixture
async def ent_stack(stack_factory: Any, catalog_path: Path) -> Stack:
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path))
    return stack


@pytest.fixture
def dodo_settings(catalog_path: Path) -> dict[str, Any]:
    """The kit's `dodo` on the test catalog (which brings the built-in entitlement handlers)."""
    return {"ENTITLEMENTS_FILE": str(catalog_path)}


async def send_processed(dodo: Dodo, event_type: str, data: dict[str, Any]) -> SentEvent:
    """`dodo.send` (data merged into the bundled sample), checking that the event was processed."""
    event = await dodo.send(event_type, data=data)
    assert event.status == "processed", event
    return event


async def _send_processed_as(dodo: Dodo, event_type: str, data: dict[str, Any], event_id: str) -> SentEvent:
    event = await dodo.send(event_type, data=data, id=event_id)
    assert event.status == "processed", event
    return event


# payload builders ------------------------------------------------------------------------------

def _customer(customer_id: str, email: str) -> dict[str, Any]:
    return {"customer_id": customer_id, "email": email, "name": "Test Buyer", "metadata": {}, "phone_number": None}


def payment(payment_id: str = "pay_test_1", product_cart: list[tuple[str, int]] | None = None, *,
            customer_id: str = CUSTOMER, email: str = EMAIL, metadata: dict[str, Any] | None = None,
            status: str = "succeeded", refund_status: str | None = None,
            refunds: list[dict[str, Any]] | None = None, subscription_id: str | None = None,
            disputes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    data = copy.deepcopy(load_sample("payment.succeeded")["data"])
    data.update({
        "payment_id": payment_id,
        "product_cart": [{"product_id": p, "quantity": q} for p, q in (product_cart or [(PRODUCT, 1)])],
        "customer": _customer(customer_id, email),
        "metadata": {"order_id": "ord_1001", "app_user_id": "usr_42"} if metadata is None else metadata,
        "status": status, "refund_status": refund_status, "refunds": refunds or [],
        "subscription_id": subscription_id, "disputes": disputes or [],
    })
    return data


def refund(payment_id: str = "pay_test_1", refund_id: str = "ref_test_1", *, is_partial: bool = False,
           status: str = "succeeded", amount: int = 1900, customer_id: str = CUSTOMER,
           email: str = EMAIL) -> dict[str, Any]:
    data = copy.deepcopy(load_sample("refund.succeeded")["data"])
    data.update({"payment_id": payment_id, "refund_id": refund_id, "is_partial": is_partial, "status": status,
                 "amount": amount, "customer": _customer(customer_id, email)})
    return data


def refund_item(refund_id: str = "ref_test_1", *, is_partial: bool = False, payment_id: str = "pay_test_1",
                status: str = "succeeded") -> dict[str, Any]:
    """A `refunds[]` entry of a payment payload."""
    return {"refund_id": refund_id, "payment_id": payment_id, "is_partial": is_partial, "status": status,
            "amount": 1900, "currency": "USD", "created_at": "2026-09-16T05:47:32Z", "reason": None}


def dispute(payment_id: str = "pay_test_1", dispute_id: str = "dp_test_1", *,
            status: str = "dispute_lost", customer_id: str = CUSTOMER, email: str = EMAIL) -> dict[str, Any]:
    data = copy.deepcopy(load_sample("dispute.lost")["data"])
    data.update({"payment_id": payment_id, "dispute_id": dispute_id, "dispute_status": status,
                 "customer": _customer(customer_id, email)})
    return data


def subscription(subscription_id: str = "sub_test_1", product_id: str = KEY_ONLY, *, status: str = "active",
                 addons: list[tuple[str, int]] | None = None, customer_id: str = CUSTOMER, email: str = EMAIL,
                 metadata: dict[str, Any] | None = None, payment_id: str | None = None) -> dict[str, Any]:
    data = copy.deepcopy(load_sample("subscription.active")["data"])
    data.update({
        "subscription_id": subscription_id, "product_id": product_id, "status": status,
        "addons": [{"addon_id": a, "quantity": q} for a, q in (addons or [])],
        "customer": _customer(customer_id, email),
        "metadata": {"app_user_id": "usr_42"} if metadata is None else metadata,
        "payment_id": payment_id,
    })
    return data


def license_key(key_id: str = "lic_test_1", *, key: str = "db44b22c-fe9b-4a68-bf0d-b0e0d6c6c8c0",
                product_id: str = PRODUCT, payment_id: str | None = "pay_test_1",
                customer_id: str = CUSTOMER, activations_limit: int | None = 3) -> dict[str, Any]:
    data = copy.deepcopy(load_sample("license_key.created")["data"])
    data.update({"id": key_id, "key": key, "product_id": product_id, "payment_id": payment_id,
                 "customer_id": customer_id, "activations_limit": activations_limit})
    return data


def envelope(event_type: str, data: dict[str, Any], timestamp: str) -> dict[str, Any]:
    """A full webhook body with its own `timestamp` (when the event happened)."""
    return {"business_id": "bus_test", "type": event_type, "timestamp": timestamp, "data": data}


# reading ---------------------------------------------------------------------------------------

async def entitlements_response(stack: Stack, token: str | None = "settings", **params: str) -> httpx.Response:
    headers = {}
    if token == "settings":
        assert stack.settings.WORKER_API_TOKEN is not None
        token = stack.settings.WORKER_API_TOKEN.get_secret_value()
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await stack.http.get(f"{stack.base_url}/v1/entitlements", params=params, headers=headers)


async def entitlements(stack: Stack | Dodo, **params: str) -> list[dict[str, Any]]:
    """The grants `GET /v1/entitlements?...` lists (metadata filters: pass {"metadata.KEY": VALUE});
    on the kit's `dodo`, what `dodo.grants` answers."""
    if isinstance(stack, Dodo):
        return await stack.grants(**params)
    response = await entitlements_response(stack, **params)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["entitlements"]
    return found


async def send_and_wait(stack: Stack | Dodo, event_type: str, data: dict[str, Any], *, event_id: str | None = None,
                        timestamp: str | None = None) -> str:
    """Send an event as Dodo would and wait until it is processed; its id. On the kit's `dodo`
    through `dodo.send` (which stamps the event now: give no `timestamp`)."""
    if isinstance(stack, Dodo):
        assert timestamp is None, "dodo.send stamps the event now"
        return (await send_processed(stack, event_type, data) if event_id is None
                else await _send_processed_as(stack, event_type, data, event_id)).id
    body = envelope(event_type, data, timestamp) if timestamp else None
    event_id, response = await stack.send(event_type, data, event_id=event_id, envelope=body)
    assert response.status_code == 200, response.text
    await stack.wait_status(event_id, "processed")
    return event_id
