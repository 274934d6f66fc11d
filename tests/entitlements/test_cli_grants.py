"""`dodo-worker grants ...`: support finds a customer's grants, reads why they are as they are,
and revokes or restores one by hand (audited, told to hooks, seen by the read API)."""

from __future__ import annotations

import json
from typing import Any

from tests.entitlements.conftest import (
    CUSTOMER,
    EMAIL,
    FILE_ONLY,
    PRODUCT,
    entitlements,
    payment,
    refund,
    send_and_wait,
)
from tests.support import Stack


async def _json(stack: Stack, *args: str) -> Any:
    code, out, err = await stack.cli("grants", *args, "--json")
    assert code == 0, err
    return json.loads(out)


async def test_list_and_show_with_audit_trail(ent_stack: Stack) -> None:
    pay = await send_and_wait(ent_stack, "payment.succeeded",
                              payment("pay_c1", [(PRODUCT, 1)], metadata={"app_user_id": "usr_9"}))
    ref = await send_and_wait(ent_stack, "refund.succeeded", refund("pay_c1", "ref_c1"))
    await send_and_wait(ent_stack, "payment.succeeded",
                        payment("pay_c2", [(FILE_ONLY, 1)], customer_id="cus_else", email="else@example.com"))

    mine = await _json(ent_stack, "list", "--customer-id", CUSTOMER)
    assert sorted((g["kind"], g["status"]) for g in mine) == [("file", "revoked"), ("license_key", "revoked")]
    assert [g["id"] for g in await _json(ent_stack, "list", "--email", EMAIL)] == [g["id"] for g in mine]
    assert len(await _json(ent_stack, "list", "--payment-id", "pay_c2")) == 1
    assert len(await _json(ent_stack, "list", "--metadata", "app_user_id=usr_9")) == 2
    assert await _json(ent_stack, "list", "--metadata", "app_user_id=usr_9", "--status", "active") == []
    assert len(await _json(ent_stack, "list", "--status", "active")) == 1

    key = next(g for g in mine if g["kind"] == "license_key")
    shown = await _json(ent_stack, "show", key["id"])
    assert shown["id"] == key["id"] and shown["license_key"]["key"] == key["license_key"]["key"]
    assert [(a["action"], a["to_status"], a["event_id"], a["actor"]) for a in shown["audit"]] == [
        ("granted", "active", pay, f"event:{pay}"), ("revoked", "revoked", ref, f"event:{ref}")]
    assert all(a["at"] for a in shown["audit"]) and "ref_c1" in shown["audit"][1]["reason"]

    code, out, err = await ent_stack.cli("grants", "show", "grt_missing", "--json")
    assert code == 1 and out == "" and "grt_missing" in err
    code, out, err = await ent_stack.cli("grants", "list", "--customer-id", CUSTOMER)
    assert code == 0 and key["id"] in out + err
    assert key["license_key"]["key"] not in out + err  # the table hides the key


async def test_revoke_and_restore_by_hand(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_c3", [(FILE_ONLY, 1)]))
    [grant] = await entitlements(ent_stack, payment_id="pay_c3")

    revoked = await _json(ent_stack, "revoke", grant["id"], "--reason", "chargeback by email, ticket 42")
    assert revoked["status"] == "revoked" and revoked["changed"] is True
    [seen] = await entitlements(ent_stack, payment_id="pay_c3")
    assert (seen["status"], seen["status_reason"], seen["file"]["download_url"]) == ("revoked", "manual", None)
    again = await _json(ent_stack, "revoke", grant["id"])
    assert again["changed"] is False

    restored = await _json(ent_stack, "restore", grant["id"])
    assert restored["status"] == "active" and restored["changed"] is True
    [seen] = await entitlements(ent_stack, payment_id="pay_c3")
    assert seen["status"] == "active" and seen["file"]["download_url"]

    trail = (await _json(ent_stack, "show", grant["id"]))["audit"]
    assert [(a["action"], a["from_status"], a["to_status"]) for a in trail] == [
        ("granted", None, "active"), ("revoked", "active", "revoked"), ("restored", "revoked", "active")]
    assert trail[1]["actor"].startswith("cli:") and trail[1]["event_id"] is None
    assert trail[1]["reason"] == "chargeback by email, ticket 42"

    code, _, err = await ent_stack.cli("grants", "revoke", "grt_missing")
    assert code == 1 and "grt_missing" in err
    code, _, err = await ent_stack.cli("grants", "list", "--metadata", "no-equals-sign")
    assert code == 2 and "KEY=VALUE" in err


async def test_cli_change_is_left_to_the_worker(ent_stack: Stack) -> None:
    """A revoke by hand neither imports HANDLER_MODULES (a support shell need not have them) nor
    decides who hears of it: it leaves one outbox row, which the worker expands with its own
    catalog, key and Python hooks (tests/entitlements/test_cli_changes.py follows it to the hooks)."""
    import sys

    from sqlalchemy import select

    from tests.support import wait_until
    from worker.entitlements.models import DeliveryRow

    module = "tests.entitlements.cli_hook_module"
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_c9", [(FILE_ONLY, 1)]))
    [grant] = await entitlements(ent_stack, payment_id="pay_c9")
    code, _, err = await ent_stack.cli("grants", "revoke", grant["id"], env={"HANDLER_MODULES": module})
    assert code == 0, err
    assert module not in sys.modules

    async def expanded() -> list[tuple[str, str]] | None:
        async with ent_stack.db.sessions() as session:
            rows = (await session.execute(
                select(DeliveryRow.target, DeliveryRow.status).where(
                    DeliveryRow.grant_id == grant["id"], DeliveryRow.event_type == "entitlement.revoked"))).all()
        found = [(target, status) for target, status in rows]
        return found if found and all(status != "pending" for _, status in found) else None

    assert await wait_until(expanded, what="the worker to expand the change") == [("worker:fan-out", "expanded")]


async def test_link_payments_reaches_first_payments_processed_before_schema_0004(ent_stack: Stack) -> None:
    """Before 0004 a subscription's first payment was not linked to its grants, so its refund
    missed them. `grants link-payments` links such payments from the inbox and applies what
    was recorded meanwhile; run again, it finds nothing to do."""
    from sqlalchemy import delete, update

    from tests.entitlements.conftest import KEY_ONLY, subscription
    from worker.entitlements.models import GrantRow, SubscriptionPaymentRow

    sub, pay = "sub_old", "pay_old"
    await send_and_wait(ent_stack, "subscription.active", subscription(sub), timestamp="2026-09-01T00:00:00Z")
    await send_and_wait(ent_stack, "payment.succeeded", payment(pay, [(KEY_ONLY, 1)], subscription_id=sub))
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_one_time", [(PRODUCT, 1)]))
    async with ent_stack.db.sessions() as session, session.begin():  # what the code before 0004 left
        await session.execute(delete(SubscriptionPaymentRow))
        await session.execute(update(GrantRow).where(GrantRow.subscription_id == sub).values(payment_id=None))
    await send_and_wait(ent_stack, "refund.succeeded", refund(pay, "ref_old"))
    [key] = await entitlements(ent_stack, subscription_id=sub)
    assert key["status"] == "active"  # the refund missed the grant

    assert await _json(ent_stack, "link-payments") == {"payments": 1, "linked": 1, "changes": 1}
    [key] = await entitlements(ent_stack, subscription_id=sub)
    assert (key["status"], key["status_reason"], key["payment_id"]) == ("revoked", "refund", pay)
    assert await _json(ent_stack, "link-payments") == {"payments": 1, "linked": 0, "changes": 0}
