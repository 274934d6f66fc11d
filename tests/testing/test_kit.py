"""The test kit as a merchant uses it: a test project in a temporary folder (pytester) whose test
file is written only from the documented API (docs/testing.md), run by pytest in a subprocess
with dodo-worker installed, in pytest-asyncio's strict and auto modes."""

from __future__ import annotations

import textwrap

import pytest

pytest_plugins = ["pytester"]

CATALOG = """\
[products.pdt_e9mUw084cWnu0tz]
name = "Acme Pro"
license_key = { activations_limit = 2 }
hooks = ["{hook_url}"]
"""

HANDLERS = '''\
from worker import on


@on("payment.succeeded", name="shop.welcome")
async def welcome(event, ctx):
    ctx.note(f"welcomed {event.data.customer.email}")


@on("dispute.opened", name="shop.flaky")
async def flaky(event, ctx):
    raise RuntimeError("the CRM is down")
'''

MERCHANT_TESTS = '''\
import pytest

PAYMENT = "pay_2IjeQm4hqU6RA4Z4kwDee"  # the bundled payment.succeeded sample's
CUSTOMER = "cus_8VbC6JDZzPEqfBPUdpj0K"


@pytest.fixture
def dodo_settings():
    return {"HANDLER_MODULES": "shop_handlers", "ENTITLEMENTS_FILE": "entitlements.toml",
            "MAX_ATTEMPTS": "2"}


@pytest.mark.asyncio
async def test_a_paid_order_gets_a_key_that_a_refund_revokes(dodo):
    paid = await dodo.send("payment.succeeded", data={"metadata": {"order_id": "ord_1"}})
    assert paid.status == "processed", paid
    assert {h["name"] for h in paid.handlers} >= {"shop.welcome", "entitlements.payment"}
    [key] = [g for g in await dodo.grants(customer_id=CUSTOMER) if g["kind"] == "license_key"]
    assert key["status"] == "active"
    assert key["metadata"]["order_id"] == "ord_1"
    assert key["license_key"]["activations_limit"] == 2
    hooks = await dodo.wait_for_hooks(1)
    assert all(hook.verified for hook in hooks)
    assert {(h.type, h.data["payment_id"]) for h in hooks} == {("entitlement.granted", PAYMENT)}, hooks

    refunded = await dodo.send("refund.succeeded", data={"payment_id": PAYMENT})
    assert refunded.status == "processed", refunded
    grants = await dodo.grants(payment_id=PAYMENT)
    assert {g["status"] for g in grants} == {"revoked"}


@pytest.mark.asyncio
async def test_a_raising_handler_ends_dead_with_its_error(dodo):
    event = await dodo.send("dispute.opened", settle=True)
    assert event.status == "dead", event
    flaky = event.handler("shop.flaky")
    assert flaky["attempts"] == 2
    assert "the CRM is down" in flaky["error"]


@pytest.mark.asyncio
async def test_a_test_sees_none_of_the_previous_tests_grants(dodo):
    assert await dodo.grants(customer_id=CUSTOMER) == []
    assert dodo.hooks == []
'''


def merchant_project(pytester: pytest.Pytester, mode: str) -> None:
    pytester.makeini(f"[pytest]\nasyncio_mode = {mode}\nasyncio_default_fixture_loop_scope = function\n")
    pytester.makefile(".toml", entitlements=CATALOG)
    pytester.makepyfile(shop_handlers=HANDLERS)


@pytest.mark.parametrize("mode", ["strict", "auto"])
def test_a_merchants_test_file_passes_in_strict_and_auto_mode(pytester: pytest.Pytester, mode: str) -> None:
    merchant_project(pytester, mode)
    pytester.makepyfile(test_shop=MERCHANT_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning")
    result.assert_outcomes(passed=3)


def test_a_failing_assertion_shows_the_event_its_handler_runs_and_their_errors(pytester: pytest.Pytester) -> None:
    merchant_project(pytester, "strict")
    pytester.makepyfile(test_red=textwrap.dedent('''\
        import pytest


        @pytest.fixture
        def dodo_settings():
            return {"HANDLER_MODULES": "shop_handlers", "MAX_ATTEMPTS": "1"}


        @pytest.mark.asyncio
        async def test_red(dodo):
            event = await dodo.send("dispute.opened")
            assert event.status == "processed"
        '''))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    output = result.stdout.str()
    assert "<SentEvent dispute.opened msg_" in output
    assert "status='dead'" in output
    assert "handler shop.flaky: dead, 1 attempt(s) this round: #1 dead (RuntimeError: the CRM is down)" in output
    assert "truncated" not in output


def test_a_project_that_does_not_use_the_kit_is_not_affected(pytester: pytest.Pytester) -> None:
    """The plugin is loaded wherever dodo-worker is installed: a project's own `dodo` fixture
    wins, its other tests run as before, and nothing heavy is imported for them."""
    pytester.makepyfile(test_plain=textwrap.dedent('''\
        import sys

        import pytest


        @pytest.fixture
        def dodo():
            return "mine"


        def test_own_fixture(dodo, dodo_settings):
            assert dodo == "mine" and dodo_settings == {}


        def test_nothing_heavy_was_imported():
            heavy = {"litestar", "arq", "uvicorn", "redis", "httpx", "alembic", "worker.testing.kit"}
            assert not heavy & set(sys.modules)
        '''))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert "dodo-worker" in result.stdout.str()  # the plugin was loaded (pytest lists it)
