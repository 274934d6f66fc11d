"""GET /v1/entitlements: a merchant's app asks what a customer may use, by every key it knows."""

from __future__ import annotations

from typing import Any

from tests.entitlements.conftest import (
    CUSTOMER,
    EMAIL,
    FILE_ONLY,
    KEY_ONLY,
    PRODUCT,
    entitlements,
    entitlements_response,
    payment,
    send_and_wait,
    subscription,
)
from tests.support import Stack


def _ids(grants: list[dict[str, Any]]) -> set[str]:
    return {g["id"] for g in grants}


async def test_lookup_by_every_key(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded",
                        payment("pay_r1", [(PRODUCT, 1)], metadata={"app_user_id": "usr_7", "plan": "pro"}))
    await send_and_wait(ent_stack, "payment.succeeded",
                        payment("pay_r2", [(FILE_ONLY, 1)], customer_id="cus_other", email="other@example.com",
                                metadata={"app_user_id": "usr_8"}))
    await send_and_wait(ent_stack, "subscription.active",
                        subscription("sub_r1", KEY_ONLY, metadata={"app_user_id": "usr_7"}))

    by_customer = await entitlements(ent_stack, customer_id=CUSTOMER)
    assert len(by_customer) == 3  # key + file of pay_r1, key of sub_r1
    assert {g["kind"] for g in by_customer} == {"license_key", "file"}
    key = next(g for g in by_customer if g["kind"] == "license_key" and g["payment_id"] == "pay_r1")
    assert key["status"] == "active" and key["product_id"] == PRODUCT
    assert key["customer_id"] == CUSTOMER and key["email"] == EMAIL
    assert key["metadata"] == {"app_user_id": "usr_7", "plan": "pro"}
    assert key["license_key"]["key"].startswith("ACME-")
    assert key["license_key"]["activations_limit"] == 2 and key["license_key"]["activations"] == 0
    assert key["license_key"]["expires_at"] is None
    assert key["created_at"] and key["updated_at"] and key["subscription_id"] is None
    file = next(g for g in by_customer if g["kind"] == "file")
    assert file["file"]["name"] == "guide.pdf"
    assert file["file"]["download_url"].startswith(f"{ent_stack.base_url}/v1/downloads/")

    by_email = await entitlements(ent_stack, email=EMAIL.upper())
    assert _ids(by_email) == _ids(by_customer)
    by_payment = await entitlements(ent_stack, payment_id="pay_r1")
    assert {(g["kind"], g["payment_id"]) for g in by_payment} == {("license_key", "pay_r1"), ("file", "pay_r1")}
    by_subscription = await entitlements(ent_stack, subscription_id="sub_r1")
    assert [(g["kind"], g["product_id"], g["subscription_id"]) for g in by_subscription] == [
        ("license_key", KEY_ONLY, "sub_r1")]
    by_metadata = await entitlements(ent_stack, **{"metadata.app_user_id": "usr_7"})
    assert _ids(by_metadata) == _ids(by_customer)
    both = await entitlements(ent_stack, **{"metadata.app_user_id": "usr_7", "metadata.plan": "pro"})
    assert _ids(both) == _ids(by_payment)
    other = await entitlements(ent_stack, **{"metadata.app_user_id": "usr_8"})
    assert [(g["kind"], g["customer_id"]) for g in other] == [("file", "cus_other")]
    anded = await entitlements(ent_stack, customer_id=CUSTOMER, payment_id="pay_r2")
    assert anded == []
    assert await entitlements(ent_stack, customer_id="cus_nobody") == []


async def test_token_required_and_filters_checked(ent_stack: Stack) -> None:
    missing = await entitlements_response(ent_stack, token=None, customer_id=CUSTOMER)
    assert missing.status_code == 401 and "error" in missing.json()
    wrong = await entitlements_response(ent_stack, token="tok_wrong", customer_id=CUSTOMER)
    assert wrong.status_code == 401
    assert ent_stack.settings.WORKER_API_TOKEN is not None
    assert ent_stack.settings.WORKER_API_TOKEN.get_secret_value() not in wrong.text
    no_filter = await entitlements_response(ent_stack)
    assert no_filter.status_code == 400 and "customer_id" in no_filter.json()["error"]
    unknown = await entitlements_response(ent_stack, colour="blue")
    assert unknown.status_code == 400
    too_many = await entitlements_response(ent_stack, **{f"metadata.k{i}": "v" for i in range(6)})
    assert too_many.status_code == 400 and "at most 5" in too_many.json()["error"]


async def test_download_links_use_public_url_when_set(stack_factory: Any, catalog_path: Any) -> None:
    """Behind a proxy the request's Host may be internal (or forged): links use PUBLIC_URL."""
    stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), PUBLIC_URL="https://files.example.com")
    await send_and_wait(stack, "payment.succeeded", payment("pay_pub1", [(FILE_ONLY, 1)]))
    [grant] = await entitlements(stack, payment_id="pay_pub1")
    assert grant["file"]["download_url"].startswith("https://files.example.com/v1/downloads/")


async def test_no_token_configured_answers_503(stack_factory: Any, catalog_path: Any) -> None:
    stack = await stack_factory(worker=False, ENTITLEMENTS_FILE=str(catalog_path), WORKER_API_TOKEN=None)
    response = await entitlements_response(stack, token="anything", customer_id=CUSTOMER)
    assert response.status_code == 503
    assert "WORKER_API_TOKEN" in response.json()["error"]
