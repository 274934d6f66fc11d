"""The console's grants pages over real HTTP, against the running web and worker: an operator
finds a customer's grant by what they were told, sees it whole and revokes, restores or frees
a seat; every change shows in the read API and in the audit trail under the operator's name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from tests.console.conftest import PASSWORD, ConsoleClient
from tests.entitlements.conftest import (
    EMAIL,
    PRODUCT,
    catalog_path,
    entitlements,
    payment,
    registry,
    send_and_wait,
)
from tests.support import Stack
from worker.console import audit

__all__ = ["catalog_path", "registry"]  # fixtures of tests/entitlements, used here

OPERATOR = "Alice"


async def stack_with_console(stack_factory: Any, catalog: Path, **settings: Any) -> Stack:
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog), CONSOLE_PASSWORD=PASSWORD, **settings)
    return stack


async def signed_in_to(stack: Stack) -> ConsoleClient:
    console = ConsoleClient(stack)
    answer = await console.sign_in(name=OPERATOR)
    assert answer.status_code == 303, answer.text
    return console


async def act(console: ConsoleClient, path: str, token_from: str, **fields: str) -> httpx.Response:
    """Submit a page's form, check it redirects (POST-redirect-GET) and GET where it leads."""
    answer = await console.submit(path, fields, token_from=token_from)
    assert answer.status_code == 303, answer.text
    return await console.get(answer.headers["location"])


async def forged(console: ConsoleClient, path: str, **fields: str) -> httpx.Response:
    """The same POST with the session cookie but without the form's CSRF token."""
    return await console.http.post(path, data=fields)


async def console_trail(stack: Stack, target: str) -> list[tuple[str, str, str, str | None]]:
    """The console's own audit trail about `target`, oldest first: who, from where, what, why."""
    async with stack.db.sessions() as session:
        rows = await audit.entries(session, target=target)
    return [(row.operator, row.client, row.action, row.detail) for row in reversed(rows)]


async def key_grant(stack: Stack, payment_id: str) -> dict[str, Any]:
    return next(g for g in await entitlements(stack, payment_id=payment_id) if g["kind"] == "license_key")


async def test_search_finds_the_grant_by_what_support_is_told(stack_factory: Any, catalog_path: Path) -> None:
    stack = await stack_with_console(stack_factory, catalog_path)
    await send_and_wait(stack, "payment.succeeded", payment("pay_search", [(PRODUCT, 1)]))
    await send_and_wait(stack, "payment.succeeded", payment("pay_other", [(PRODUCT, 1)], customer_id="cus_2",
                                                            email="someone@example.com", metadata={}))
    grant = await key_grant(stack, "pay_search")
    other = await key_grant(stack, "pay_other")
    console = await signed_in_to(stack)
    try:
        page = await console.get("/console/grants")
        assert '<input type="search" id="q" name="q"' in page.text
        for q in (EMAIL.upper(), "cus_test_1", "pay_search", grant["license_key"]["key"], "ord_1001"):
            found = await console.get("/console/grants", params={"q": q})
            assert found.status_code == 200
            assert f'href="/console/grants/{grant["id"]}"' in found.text, q
            assert other["id"] not in found.text, q
        none = await console.get("/console/grants", params={"q": "nobody@example.com"})
        assert grant["id"] not in none.text and "No grant matches" in none.text
        files = await console.get("/console/grants", params={"q": EMAIL, "kind": "file"})
        assert grant["id"] not in files.text and "/console/grants/grt_" in files.text
        for bad in ({"status": "lost"}, {"kind": "car"}, {"page": "x"}, {"page": "0"}, {"q": "x" * 400}):
            assert (await console.get("/console/grants", params=bad)).status_code == 400, bad
        assert (await console.get("/console/grants/grt_nope")).status_code == 404

        shown = await console.get(f"/console/grants/{grant['id']}")
        assert shown.status_code == 200
        assert grant["license_key"]["key"] in shown.text  # in full, to a signed-in operator
        assert "pay_search" in shown.text and "granted" in shown.text  # the audit trail
        [file_grant] = [g for g in await entitlements(stack, payment_id="pay_search") if g["kind"] == "file"]
        file_page = await console.get(f"/console/grants/{file_grant['id']}")
        link = re.search(r'class="download-link" href="([^"]+)"', file_page.text)
        assert link is not None
        assert (await stack.http.get(link.group(1).replace("&amp;", "&"))).content.startswith(b"%PDF")
    finally:
        await console.aclose()
    anonymous = await stack.http.get(f"{stack.base_url}/console/grants/{grant['id']}")
    assert anonymous.status_code == 303 and grant["license_key"]["key"] not in anonymous.text
    assert (await stack.http.get(f"{stack.base_url}/console/grants", params={"q": EMAIL})).status_code == 303


async def test_revoke_with_a_reason_then_restore(stack_factory: Any, catalog_path: Path) -> None:
    stack = await stack_with_console(stack_factory, catalog_path)
    await send_and_wait(stack, "payment.succeeded", payment("pay_revoke", [(PRODUCT, 1)]))
    grant = await key_grant(stack, "pay_revoke")
    page = f"/console/grants/{grant['id']}"
    console = await signed_in_to(stack)
    try:
        refused = await forged(console, f"{page}/revoke", reason="ticket 77: chargeback")
        assert refused.status_code == 403
        assert (await key_grant(stack, "pay_revoke"))["status"] == "active"
        assert (await console.submit(f"{page}/revoke", {"reason": "  "}, token_from=page)).status_code == 400
        assert (await key_grant(stack, "pay_revoke"))["status"] == "active"

        shown = await act(console, f"{page}/revoke", page, reason="ticket 77: chargeback")
        assert (await key_grant(stack, "pay_revoke"))["status"] == "revoked"
        assert "ticket 77: chargeback" in shown.text
        assert f"console:{OPERATOR} (127.0.0.1)" in shown.text
        assert "Restore" in shown.text

        shown = await act(console, f"{page}/restore", page, reason="customer paid again")
        assert (await key_grant(stack, "pay_revoke"))["status"] == "active"
        assert "customer paid again" in shown.text
        missing = await console.submit("/console/grants/grt_nope/revoke", {"reason": "x"}, token_from=page)
        assert missing.status_code == 404
        assert await console_trail(stack, grant["id"]) == [
            ("Alice", "127.0.0.1", "grant.revoke", "ticket 77: chargeback"),
            ("Alice", "127.0.0.1", "grant.restore", "customer paid again")]
    finally:
        await console.aclose()


async def test_deactivate_frees_the_seat(stack_factory: Any, catalog_path: Path) -> None:
    stack = await stack_with_console(stack_factory, catalog_path)
    await send_and_wait(stack, "payment.succeeded", payment("pay_seat", [(PRODUCT, 1)]))
    grant = await key_grant(stack, "pay_seat")
    key = grant["license_key"]["key"]
    activated = await stack.http.post(f"{stack.base_url}/v1/licenses/activate",
                                      json={"license_key": key, "name": "laptop"})
    assert activated.status_code == 201, activated.text
    instance = activated.json()["id"]
    page = f"/console/grants/{grant['id']}"
    console = await signed_in_to(stack)
    try:
        shown = await console.get(page)
        assert "laptop" in shown.text and "Deactivate" in shown.text
        action = f"{page}/activations/{instance}/deactivate"
        assert (await forged(console, action)).status_code == 403
        assert (await key_grant(stack, "pay_seat"))["license_key"]["activations"] == 1

        shown = await act(console, action, page)
        assert (await key_grant(stack, "pay_seat"))["license_key"]["activations"] == 0
        valid = await stack.http.post(f"{stack.base_url}/v1/licenses/validate",
                                      json={"license_key": key, "license_key_instance_id": instance})
        assert valid.json()["valid"] is False
        assert f"activations/{instance}/deactivate" not in shown.text
        assert f"console:{OPERATOR} (127.0.0.1)" in shown.text  # who freed it, in the grant's trail
        assert (await console.submit(f"{page}/activations/lki_nope/deactivate", token_from=page)).status_code == 403
    finally:
        await console.aclose()
