"""Keys Dodo issued (recorded from `license_key.created`) through `/v1/licenses/*`: activated,
validated and deactivated at Dodo (the fake Dodo API over real HTTP, following the spec), the
local rows following Dodo's answers so both ends count the same activations; Dodo's refusals
passed on; Dodo unreachable; the customer's name and email; and the fake's licence endpoints
checked against Dodo's OpenAPI spec."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from integrations.dodo import DodoLicenses, DodoUnreachable, create_license_client
from tests.entitlements.conftest import (
    CUSTOMER,
    EMAIL,
    PRODUCT,
    entitlements,
    license_key,
    payment,
    refund,
    send_and_wait,
)
from tests.entitlements.test_licenses import call, refused
from tests.fakedodo.test_spec import spec, validator
from tests.support import Stack
from worker.entitlements.licenses import Licenses
from worker.entitlements.models import ActivationRow, AuditRow, GrantRow
from worker.testing.fakedodo import FakeDodo, serve
from worker.testing.fakedodo import data as dodo_data
from worker.testing.fakedodo.server import LICENSE_ROUTES

KEY = "db44b22c-fe9b-4a68-bf0d-b0e0d6c6c8c0"
KEY_ID = "lic_dodo_1"
OUTSIDE = "pdt_dodo_only"  # a product Dodo issues keys for that the catalog does not list
BUYER = {"customer_id": CUSTOMER, "name": "Ada Buyer", "email": EMAIL}


@dataclass
class FakeApi:
    fake: FakeDodo
    url: str

    def key(self, key: str = KEY) -> dict[str, Any]:
        return self.fake.licenses.keys[key]

    def calls(self, action: str) -> int:
        return self.fake.count(f"/licenses/{action}")


@pytest.fixture
async def fake_dodo() -> AsyncIterator[FakeApi]:
    fake = FakeDodo()
    fake.licenses.products[PRODUCT] = "Acme Pro (at Dodo)"
    async with serve(fake) as url:
        yield FakeApi(fake, url)


@pytest.fixture
async def dodo_stack(stack_factory: Any, catalog_path: Any, fake_dodo: FakeApi) -> Stack:
    # An API key is configured (as for reconciliation): it must not travel with licence calls.
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), DODO_PAYMENTS_BASE_URL=fake_dodo.url,
                                       DODO_PAYMENTS_API_KEY=fake_dodo.fake.api_key)
    return stack


async def dodo_key(stack: Stack, fake_dodo: FakeApi, *, key: str = KEY, key_id: str = KEY_ID, product_id: str = PRODUCT,
                   limit: int | None = 3, at_dodo: dict[str, Any] | None = None,
                   customer: dict[str, Any] | None = BUYER, payment_id: str = "pay_dodo",
                   customer_id: str = CUSTOMER) -> None:
    """A key Dodo holds (limit `limit`, changes in `at_dodo`; Dodo knows `customer`), recorded
    here from its webhook."""
    held = dodo_data.license_key(key_id, key, product_id=product_id, customer_id=customer_id,
                                 payment_id=payment_id, activations_limit=limit)
    fake_dodo.fake.licenses.add({**held, **(at_dodo or {})}, customer)
    await send_and_wait(stack, "license_key.created",
                        license_key(key_id, key=key, product_id=product_id, payment_id=payment_id,
                                    customer_id=customer_id, activations_limit=limit))


async def local_count(stack: Stack, key_id: str = KEY_ID) -> int:
    async with stack.db.sessions() as session:
        grant = (await session.scalars(select(GrantRow).where(GrantRow.dodo_license_key_id == key_id))).one()
    listed = next(g for g in await entitlements(stack, customer_id=CUSTOMER) if g["id"] == grant.id)
    return int(listed["license_key"]["activations"])


async def grant_of(stack: Stack, key_id: str = KEY_ID) -> GrantRow:
    async with stack.db.sessions() as session:
        return (await session.scalars(select(GrantRow).where(GrantRow.dodo_license_key_id == key_id))).one()


async def test_a_dodo_key_is_activated_validated_and_deactivated_at_dodo(dodo_stack: Stack, fake_dodo: FakeApi) -> None:
    await dodo_key(dodo_stack, fake_dodo)

    first = await call(dodo_stack, "validate", license_key=KEY)
    assert first.json() == {"valid": True, "status": "active", "product_id": PRODUCT, "expires_at": None,
                            "activations_limit": 3, "activations": 0, "source": "dodo"}

    laptop = await call(dodo_stack, "activate", license_key=KEY, name="Laptop")
    assert laptop.status_code == 201, laptop.text
    instance = laptop.json()
    assert instance["id"] in fake_dodo.fake.licenses.instances  # Dodo's instance id, not one of ours
    assert (instance["license_key_id"], instance["name"], instance["business_id"]) == (KEY_ID, "Laptop", "bus_fake")
    assert instance["customer"] == BUYER
    assert instance["product"] == {"product_id": PRODUCT, "name": "Acme Pro (at Dodo)"}
    # The key as a person might type it still finds the grant; Dodo is sent the key as issued.
    desktop = await call(dodo_stack, "activate", license_key=KEY.upper().replace("-", ""), name="Desktop")
    assert desktop.status_code == 201, desktop.text
    assert fake_dodo.key()["instances_count"] == await local_count(dodo_stack) == 2

    async with dodo_stack.db.sessions() as session:
        rows = {r.id: r.name for r in await session.scalars(select(ActivationRow))}
    assert rows == {instance["id"]: "Laptop", desktop.json()["id"]: "Desktop"}

    checked = await call(dodo_stack, "validate", license_key=KEY, license_key_instance_id=instance["id"])
    assert (checked.json()["valid"], checked.json()["source"], checked.json()["activations"]) == (True, "dodo", 2)

    freed = await call(dodo_stack, "deactivate", license_key=KEY, license_key_instance_id=instance["id"])
    assert (freed.status_code, freed.content) == (200, b"")
    assert fake_dodo.key()["instances_count"] == await local_count(dodo_stack) == 1
    # Dodo forgot the instance, so it refuses a retry (403); the retry still answers 200 here.
    again = await call(dodo_stack, "deactivate", license_key=KEY, license_key_instance_id=instance["id"])
    assert (again.status_code, again.content) == (200, b"")
    assert fake_dodo.fake.calls[-1].status == 403
    gone = await call(dodo_stack, "validate", license_key=KEY, license_key_instance_id=instance["id"])
    assert (gone.json()["valid"], gone.json()["source"]) == (False, "dodo")
    assert fake_dodo.key()["instances_count"] == await local_count(dodo_stack) == 1

    assert (fake_dodo.calls("activate"), fake_dodo.calls("validate"), fake_dodo.calls("deactivate")) == (2, 3, 2)
    assert fake_dodo.fake.licenses.authorizations == [None] * 7  # public endpoints: no API key sent
    async with dodo_stack.db.sessions() as session:
        audit = list(await session.scalars(select(AuditRow.reason).where(AuditRow.action.in_(
            ("activated", "deactivated"))).order_by(AuditRow.id)))
    assert [a.endswith("at Dodo") for a in audit] == [True, True, True]


async def test_dodos_refusals_are_passed_on(dodo_stack: Stack, fake_dodo: FakeApi) -> None:
    await dodo_key(dodo_stack, fake_dodo, limit=1)
    assert (await call(dodo_stack, "activate", license_key=KEY, name="Laptop")).status_code == 201
    # Dodo's limit is the one that counts (the merchant may have changed it at Dodo).
    fake_dodo.key()["activations_limit"] = 1
    full = await call(dodo_stack, "activate", license_key=KEY, name="Desktop")
    refused(full, 422, "LICENSE_KEY_LIMIT_REACHED", "License key activation limit reached")
    foreign = await call(dodo_stack, "deactivate", license_key=KEY, license_key_instance_id="lki_not_this_keys")
    refused(foreign, 403, "LICENSE_KEY_NOT_FOUND",
            "License key instance not found or does not belong to this license key")
    assert fake_dodo.key()["instances_count"] == await local_count(dodo_stack) == 1

    fake_dodo.key()["status"] = "disabled"  # disabled at Dodo, not yet here
    disabled = await call(dodo_stack, "activate", license_key=KEY, name="Desktop")
    refused(disabled, 403, "INACTIVE_LICENSE_KEY", "License key is not active")
    validated = (await call(dodo_stack, "validate", license_key=KEY)).json()
    assert (validated["valid"], validated["status"], validated["source"]) == (False, "active", "dodo")
    assert fake_dodo.key()["instances_count"] == await local_count(dodo_stack) == 1


async def test_a_local_revocation_wins_without_asking_dodo(dodo_stack: Stack, fake_dodo: FakeApi) -> None:
    await dodo_key(dodo_stack, fake_dodo)
    await send_and_wait(dodo_stack, "refund.succeeded", refund("pay_dodo", "ref_dodo"))
    refusal = await call(dodo_stack, "activate", license_key=KEY, name="Laptop")
    refused(refusal, 403, "INACTIVE_LICENSE_KEY", "license key is revoked")
    assert fake_dodo.calls("activate") == 0
    validated = (await call(dodo_stack, "validate", license_key=KEY)).json()
    assert (validated["valid"], validated["status"], validated["source"]) == (False, "revoked", "dodo")


async def test_dodo_unreachable(stack_factory: Any, catalog_path: Any) -> None:
    """validate answers the last known state and says so; activate and deactivate answer 503."""
    fake = FakeDodo()
    async with serve(fake) as url:
        fake_dodo = FakeApi(fake, url)
        stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), DODO_PAYMENTS_BASE_URL=url)
        await dodo_key(stack, fake_dodo)
        instance = (await call(stack, "activate", license_key=KEY, name="Laptop")).json()

        fake.fail_next(3, status=503)  # each call is tried once: no SDK retries in the request path
        await _check_unreachable(stack, instance["id"])
        assert sum(1 for c in fake.calls if c.status == 503) == 3
    # Now nothing listens at Dodo's address at all: connection refused.
    await _check_unreachable(stack, instance["id"])
    assert fake_dodo.key()["instances_count"] == await local_count(stack) == 1


async def _check_unreachable(stack: Stack, instance_id: str) -> None:
    validated = await call(stack, "validate", license_key=KEY, license_key_instance_id=instance_id)
    assert validated.json() == {"valid": True, "status": "active", "product_id": PRODUCT, "expires_at": None,
                                "activations_limit": 3, "activations": 1, "source": "local",
                                "dodo_unreachable": True}
    for action, body in (("activate", {"name": "Desktop"}), ("deactivate", {"license_key_instance_id": instance_id})):
        answer = await call(stack, action, license_key=KEY, **body)
        refused(answer, 503, "DODO_UNAVAILABLE")
        assert answer.headers["retry-after"] == "5"
        assert action in answer.json()["message"]


async def test_a_slow_dodo_times_out(stack_factory: Any) -> None:
    fake = FakeDodo(delay=1.0)
    async with serve(fake) as url:
        stack: Stack = await stack_factory(web=False, worker=False, DODO_PAYMENTS_BASE_URL=url)
        client = DodoLicenses(create_license_client(stack.settings, timeout=httpx.Timeout(0.2), max_retries=0))
        try:
            with pytest.raises(DodoUnreachable, match="timed out"):
                await client.validate(KEY, None)
        finally:
            await client.close()


async def test_an_activation_the_store_cannot_record_is_given_back(
        dodo_stack: Stack, fake_dodo: FakeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    from sqlalchemy.exc import OperationalError

    await dodo_key(dodo_stack, fake_dodo)

    async def store_down(*_args: Any) -> None:
        raise OperationalError("INSERT", {}, ConnectionError("the store went away"))

    monkeypatch.setattr(Licenses, "_record_dodo_activation", store_down)
    answer = await call(dodo_stack, "activate", license_key=KEY, name="Laptop")
    refused(answer, 503, "STORE_UNAVAILABLE")
    assert (fake_dodo.calls("activate"), fake_dodo.calls("deactivate")) == (1, 1)
    assert fake_dodo.key()["instances_count"] == await local_count(dodo_stack) == 0


async def test_the_customer_has_a_name_and_email(dodo_stack: Stack, fake_dodo: FakeApi) -> None:
    # Dodo's answer to activate names its customer; the grant (whose webhook did not) learns it.
    await dodo_key(dodo_stack, fake_dodo)
    assert (await grant_of(dodo_stack)).email is None  # license_key.created names only the customer id
    instance = (await call(dodo_stack, "activate", license_key=KEY, name="Laptop")).json()
    assert instance["customer"] == BUYER
    grant = await grant_of(dodo_stack)
    assert (grant.customer_name, grant.email) == ("Ada Buyer", EMAIL)

    # Dodo answers no name (and the product is not in the catalog, so no other grant knows the
    # customer), but the payment's own webhook came in: the name and email are taken from it.
    await dodo_key(dodo_stack, fake_dodo, key="c0ffee00-0000-4000-8000-000000000002", key_id="lic_dodo_2",
                   product_id=OUTSIDE, payment_id="pay_outside", customer=None, customer_id="cus_outside")
    await send_and_wait(dodo_stack, "payment.succeeded",
                        payment("pay_outside", [(OUTSIDE, 1)], customer_id="cus_outside", email="other@example.com"))
    learnt = (await call(dodo_stack, "activate", license_key="c0ffee00-0000-4000-8000-000000000002",
                         name="Laptop")).json()
    assert learnt["customer"] == {"customer_id": "cus_outside", "name": "Test Buyer", "email": "other@example.com"}
    assert learnt["product"] == {"product_id": OUTSIDE, "name": None}

    # Nobody knows: null, never "".
    await dodo_key(dodo_stack, fake_dodo, key="c0ffee00-0000-4000-8000-000000000003", key_id="lic_dodo_3",
                   product_id=OUTSIDE, payment_id="pay_unknown", customer=None, customer_id="cus_nobody")
    unknown = (await call(dodo_stack, "activate", license_key="c0ffee00-0000-4000-8000-000000000003",
                          name="Laptop")).json()
    assert unknown["customer"] == {"customer_id": "cus_nobody", "name": None, "email": None}


# the fake's licence endpoints against Dodo's OpenAPI spec ----------------------------------------

def _operation(path: str) -> dict[str, Any]:
    return dict(spec()["paths"][path]["post"])


def _ref(schema: dict[str, Any]) -> str:
    return str(schema["$ref"].rsplit("/", 1)[-1])


def test_the_fake_licence_routes_are_the_specs() -> None:
    for route in LICENSE_ROUTES:
        operation = _operation(route.path)
        assert "security" not in operation, f"{route.path} is public in the spec"
        assert _ref(operation["requestBody"]["content"]["application/json"]["schema"]) == route.request
        success = operation["responses"][str(route.status)]
        if route.response is None:
            assert "content" not in success, f"{route.path}: the spec answers a body"
        else:
            assert _ref(success["content"]["application/json"]["schema"]) == route.response


async def test_every_licence_answer_of_the_fake_follows_the_spec() -> None:
    fake = FakeDodo()
    held = dodo_data.license_key(KEY_ID, KEY, product_id=PRODUCT, customer_id=CUSTOMER, payment_id="pay_1",
                                 activations_limit=1)
    validator("LicenseKeyResponse").validate(held)
    fake.licenses.add(held, BUYER)
    fake.licenses.add(dodo_data.license_key("lic_off", "off-key", product_id=PRODUCT, customer_id=CUSTOMER,
                                            payment_id="pay_2", status="disabled"))
    answers: list[tuple[str, httpx.Response]] = []
    async with serve(fake) as url, httpx.AsyncClient(base_url=url) as http:
        async def post(path: str, body: Any) -> httpx.Response:
            response = await http.post(path, json=body)
            answers.append((path, response))
            return response

        instance = (await post("/licenses/activate", {"license_key": KEY, "name": "Laptop"})).json()
        await post("/licenses/activate", {"license_key": KEY, "name": "Desktop"})  # 422 limit
        await post("/licenses/activate", {"license_key": "off-key", "name": "x"})  # 403 inactive
        await post("/licenses/activate", {"license_key": "nope", "name": "x"})  # 404
        await post("/licenses/activate", {"license_key": KEY})  # 422 body
        for body in ({"license_key": KEY}, {"license_key": KEY, "license_key_instance_id": instance["id"]},
                     {"license_key": KEY, "license_key_instance_id": None}, {"license_key": "nope"}, {}):
            await post("/licenses/validate", body)
        await post("/licenses/deactivate", {"license_key": KEY, "license_key_instance_id": "lki_other"})  # 403
        await post("/licenses/deactivate", {"license_key": "nope", "license_key_instance_id": instance["id"]})
        await post("/licenses/deactivate", {"license_key": KEY, "license_key_instance_id": instance["id"]})
        assert fake.licenses.keys[KEY]["instances_count"] == 0
    routes = {r.path: r for r in LICENSE_ROUTES}
    seen: set[tuple[str, int]] = set()
    for path, response in answers:
        seen.add((path, response.status_code))
        assert str(response.status_code) in _operation(path)["responses"], (path, response.status_code)
        if response.status_code == routes[path].status:
            schema = routes[path].response
            if schema is None:
                assert response.content == b""
            else:
                validator(schema).validate(response.json())
        else:  # Dodo's error shape, a code from its list
            assert set(response.json()) == {"code", "message"}, response.text
    assert seen == {("/licenses/activate", 201), ("/licenses/activate", 422), ("/licenses/activate", 403),
                    ("/licenses/activate", 404), ("/licenses/validate", 200), ("/licenses/validate", 422),
                    ("/licenses/deactivate", 403), ("/licenses/deactivate", 404), ("/licenses/deactivate", 200)}
    validator("ActivateLicenseKeyRequest").validate({"license_key": KEY, "name": "Laptop"})
