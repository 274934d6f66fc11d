"""`/v1/licenses/*` as a customer's desktop app uses them, against keys granted by real payments
(keys this service issued; tests/entitlements/test_dodo_licenses.py has the keys Dodo issued).
Every refusal is Dodo's `{"code", "message"}` with `"error"` (the same message) beside them."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from tests.entitlements.conftest import CUSTOMER, EMAIL, PRODUCT, entitlements, payment, refund, send_and_wait
from tests.support import Stack
from worker.entitlements import tokens
from worker.entitlements.models import AuditRow, GrantRow
from worker.store.models import utcnow
from worker.testing.kit import Dodo


async def call(stack: Stack | Dodo, action: str, **body: Any) -> httpx.Response:
    return await stack.http.post(f"{stack.url}/v1/licenses/{action}", json=body)


def refused(response: httpx.Response, status: int, code: str, message: str | None = None) -> None:
    """`response` is a refusal in Dodo's shape, plus the older `error` with the same message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"code", "message", "error"}, body
    assert body["code"] == code and body["error"] == body["message"], body
    assert message is None or body["message"] == message, body


async def bought_key(stack: Stack | Dodo, payment_id: str = "pay_lic") -> tuple[str, dict[str, Any]]:
    """Pay for the product (licence key, 2 activations) and read the key from the read API."""
    await send_and_wait(stack, "payment.succeeded", payment(payment_id, [(PRODUCT, 1)]))
    grant = next(g for g in await entitlements(stack, payment_id=payment_id) if g["kind"] == "license_key")
    return grant["license_key"]["key"], grant


async def test_activation_limit_and_deactivation(dodo: Dodo) -> None:
    key, grant = await bought_key(dodo)

    response = await call(dodo, "validate", license_key=key)
    assert response.status_code == 200
    assert response.json() == {"valid": True, "status": "active", "product_id": PRODUCT, "expires_at": None,
                               "activations_limit": 2, "activations": 0, "source": "local"}

    laptop = await call(dodo, "activate", license_key=key, name="Laptop")
    assert laptop.status_code == 201, laptop.text
    instance = laptop.json()
    assert instance["id"].startswith("lki_")
    assert instance["name"] == "Laptop"
    assert instance["license_key_id"] == grant["id"]
    assert instance["created_at"]
    assert instance["customer"] == {"customer_id": CUSTOMER, "name": "Test Buyer", "email": EMAIL}
    assert instance["product"] == {"product_id": PRODUCT, "name": "Acme Pro"}
    assert "business_id" in instance

    # The key as a person might type it: lower case, no dashes.
    desktop = await call(dodo, "activate", license_key=key.lower().replace("-", ""), name="Desktop")
    assert desktop.status_code == 201, desktop.text

    third = await call(dodo, "activate", license_key=key, name="Third machine")
    refused(third, 422, "LICENSE_KEY_LIMIT_REACHED", "activation limit reached (2)")
    listed = next(g for g in await entitlements(dodo, payment_id="pay_lic") if g["kind"] == "license_key")
    assert listed["license_key"]["activations"] == 2

    checked = await call(dodo, "validate", license_key=key, license_key_instance_id=instance["id"])
    assert checked.json()["valid"] is True

    freed = await call(dodo, "deactivate", license_key=key, license_key_instance_id=instance["id"])
    assert (freed.status_code, freed.content) == (200, b"")  # Dodo answers no body either
    again = await call(dodo, "deactivate", license_key=key, license_key_instance_id=instance["id"])
    assert (again.status_code, again.content) == (200, b"")  # a retried deactivation is not an error
    assert (await call(dodo, "validate", license_key=key,
                       license_key_instance_id=instance["id"])).json()["valid"] is False
    assert (await call(dodo, "activate", license_key=key, name="Third machine")).status_code == 201

    async with dodo.db.sessions() as session:
        actions = list(await session.scalars(
            select(AuditRow.action).where(AuditRow.grant_id == grant["id"]).order_by(AuditRow.id)))
    assert actions[-4:] == ["activated", "activated", "deactivated", "activated"]


async def test_unknown_keys_and_foreign_instances(dodo: Dodo) -> None:
    key, _ = await bought_key(dodo, "pay_one")
    other_key, _ = await bought_key(dodo, "pay_two")
    other = (await call(dodo, "activate", license_key=other_key, name="Other")).json()

    unknown = "ACME-AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG"
    assert (await call(dodo, "validate", license_key=unknown)).json() == {"valid": False, "source": "local"}
    for action, body in (("activate", {"name": "x"}), ("deactivate", {"license_key_instance_id": other["id"]})):
        refused(await call(dodo, action, license_key=unknown, **body), 404, "NOT_FOUND", "license key not found")

    foreign = await call(dodo, "deactivate", license_key=key, license_key_instance_id=other["id"])
    refused(foreign, 403, "LICENSE_KEY_NOT_FOUND")
    unknown_instance = await call(dodo, "deactivate", license_key=key, license_key_instance_id="lki_nope")
    refused(unknown_instance, 403, "LICENSE_KEY_NOT_FOUND")
    assert (await call(dodo, "validate", license_key=key,
                       license_key_instance_id=other["id"])).json()["valid"] is False
    assert (await call(dodo, "validate", license_key=other_key,
                       license_key_instance_id=other["id"])).json()["valid"] is True


async def test_revoked_key_is_invalid_and_refuses_activation(dodo: Dodo) -> None:
    key, _ = await bought_key(dodo)
    instance = (await call(dodo, "activate", license_key=key, name="Laptop")).json()

    await send_and_wait(dodo, "refund.succeeded", refund("pay_lic", "ref_lic"))

    validated = (await call(dodo, "validate", license_key=key)).json()
    assert (validated["valid"], validated["status"]) == (False, "revoked")
    assert (await call(dodo, "validate", license_key=key,
                       license_key_instance_id=instance["id"])).json()["valid"] is False
    refusal = await call(dodo, "activate", license_key=key, name="Desktop")
    refused(refusal, 403, "INACTIVE_LICENSE_KEY", "license key is revoked")
    # A machine can still be let go (it frees nothing useful, but the app's uninstall works).
    assert (await call(dodo, "deactivate", license_key=key,
                       license_key_instance_id=instance["id"])).status_code == 200


async def test_expired_key_is_invalid(dodo: Dodo) -> None:
    key, grant = await bought_key(dodo)
    async with dodo.db.sessions() as session, session.begin():
        await session.execute(update(GrantRow).where(GrantRow.id == grant["id"])
                              .values(expires_at=utcnow() - timedelta(minutes=1)))
    assert (await call(dodo, "validate", license_key=key)).json()["valid"] is False
    refusal = await call(dodo, "activate", license_key=key, name="Laptop")
    refused(refusal, 403, "INACTIVE_LICENSE_KEY", "license key has expired")


async def test_concurrent_activations_never_exceed_the_limit(dodo: Dodo) -> None:
    key, _ = await bought_key(dodo)
    answers = await asyncio.gather(*(call(dodo, "activate", license_key=key, name=f"machine {i}")
                                     for i in range(8)))
    assert sorted(r.status_code for r in answers) == [201, 201] + [422] * 6
    for answer in answers:
        if answer.status_code == 422:
            refused(answer, 422, "LICENSE_KEY_LIMIT_REACHED")
    listed = next(g for g in await entitlements(dodo, payment_id="pay_lic") if g["kind"] == "license_key")
    assert listed["license_key"]["activations"] == 2


async def test_malformed_requests_are_422(dodo: Dodo) -> None:
    url = f"{dodo.url}/v1/licenses"
    not_json = await dodo.http.post(f"{url}/validate", content=b"license_key=x")
    refused(not_json, 422, "INVALID_REQUEST_BODY", "the body is not JSON")
    no_name = await dodo.http.post(f"{url}/activate", json={"license_key": "ACME-AAAA"})
    refused(no_name, 422, "INVALID_REQUEST_BODY", "name must be a non-empty string")
    listed = await dodo.http.post(f"{url}/deactivate", json=["ACME-AAAA"])
    refused(listed, 422, "INVALID_REQUEST_BODY", "the body is not a JSON object")
    no_instance = await dodo.http.post(f"{url}/deactivate", json={"license_key": "ACME-AAAA"})
    refused(no_instance, 422, "INVALID_REQUEST_BODY", "license_key_instance_id must be a non-empty string")
    huge = await dodo.http.post(f"{url}/validate", json={"license_key": "A" * 20_000})
    refused(huge, 413, "PAYLOAD_TOO_LARGE")


async def test_dodos_own_sdk_works_against_these_endpoints(dodo: Dodo) -> None:
    """An app written for Dodo's licence endpoints only changes its base URL."""
    from dodopayments import AsyncDodoPayments, UnprocessableEntityError

    key, grant = await bought_key(dodo)
    client = AsyncDodoPayments(bearer_token="unused", base_url=f"{dodo.url}/v1", max_retries=0)
    try:
        instance = await client.licenses.activate(license_key=key, name="Laptop")
        assert (instance.name, instance.license_key_id, instance.product.product_id) == ("Laptop", grant["id"], PRODUCT)
        assert (instance.customer.email, instance.customer.name) == (EMAIL, "Test Buyer")
        assert (await client.licenses.validate(license_key=key, license_key_instance_id=instance.id)).valid
        await client.licenses.activate(license_key=key, name="Desktop")
        with pytest.raises(UnprocessableEntityError) as limit:
            await client.licenses.activate(license_key=key, name="Third")
        assert isinstance(limit.value.body, dict) and limit.value.body["code"] == "LICENSE_KEY_LIMIT_REACHED"
        await client.licenses.deactivate(license_key=key, license_key_instance_id=instance.id)
        assert not (await client.licenses.validate(license_key=key, license_key_instance_id=instance.id)).valid
    finally:
        await client.close()


async def test_store_unreachable_is_503(stack_factory: Any) -> None:
    """The app should retry later (or trust its cached answer), not read a 500."""
    stack: Stack = await stack_factory(worker=False, DATABASE_URL="postgresql+asyncpg://nobody@127.0.0.1:9/none")
    for action, body in (("validate", {}), ("activate", {"name": "Laptop"}),
                         ("deactivate", {"license_key_instance_id": "lki_x"})):
        refused(await call(stack, action, license_key="ACME-AAAA-BBBB", **body), 503, "STORE_UNAVAILABLE",
                "store unavailable")
    response = await stack.http.get(f"{stack.url}/v1/downloads/"
                                    f"{tokens.make_token(tokens.signing_key(stack.settings) or b'', 'grt_x', 60)}")
    assert (response.status_code, response.json()) == (503, {"error": "store unavailable"})
