"""Which hook URLs are called: every spelling of a loopback or private address is `refused`
(final, never retried), plain http is `refused` unless HOOKS_ALLOW_HTTP, and what a failed
delivery records (`last_error`) is scrubbed like an event's error."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from integrations.hook_urls import HTTP_REFUSED, NotAnAddress, parse_ipv4, vet_url
from tests.entitlements.conftest import EMAIL, PRODUCT, payment, send_and_wait, write_catalog
from tests.entitlements.receiver import HookEndpoint, serve
from tests.support import Stack, wait_until
from worker.entitlements import hooks as python_hooks
from worker.entitlements.models import DeliveryRow
from worker.scrub import scrub
from worker.signing import generate_secret

FAST_RETRIES = {"HOOKS_RETRY_BASE_SECONDS": 0.05, "HOOKS_RETRY_MAX_SECONDS": 0.2}


async def deliveries(stack: Stack) -> list[DeliveryRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(DeliveryRow).order_by(DeliveryRow.created_at, DeliveryRow.id)))


async def hook_stack(stack_factory: Any, tmp_path: Path, urls: list[str], **settings: Any) -> Stack:
    catalog = write_catalog(tmp_path, hooks=urls)
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog), HOOKS_SIGNING_KEY=generate_secret(),
                                       **FAST_RETRIES, **settings)
    return stack


async def settled(stack: Stack, count: int) -> list[DeliveryRow]:
    """The deliveries once there are `count` and none is pending any more."""
    async def done() -> list[DeliveryRow] | None:
        rows = await deliveries(stack)
        return rows if len(rows) == count and all(r.status != "pending" for r in rows) else None

    found: list[DeliveryRow] = await wait_until(done, what=f"{count} settled deliveries")
    return found


@pytest.mark.parametrize("host", ["0177.0.0.1", "0x7f.0.0.1", "2130706433", "127.1", "0x7f000001",
                                  "017700000001", "127.0.0.1.", "0x7F.1"])
def test_every_ipv4_spelling_of_loopback_is_read_as_127_0_0_1(host: str) -> None:
    assert parse_ipv4(host) == ipaddress.IPv4Address("127.0.0.1")


@pytest.mark.parametrize("host", ["1.2.3.256", "1.2.3.4.5", "08.0.0.1", "a.b.c.1", "4294967296", "1.0x1g.3.4"])
def test_a_host_that_ends_in_a_number_but_is_no_address_is_not_a_name(host: str) -> None:
    with pytest.raises(NotAnAddress):
        parse_ipv4(host)
    vetted = vet_url(f"https://{host}/hook", allow_http=False)
    assert vetted.url is None and vetted.refusal is not None and "not a valid address" in vetted.refusal


@pytest.mark.parametrize("host", ["example.com", "hooks.example.com.", "1.2.3.0x1g", "xn--bcher-kva.example"])
def test_names_stay_names(host: str) -> None:
    assert parse_ipv4(host) is None


async def test_every_spelling_of_a_private_address_is_refused_and_never_retried(
        stack_factory: Any, tmp_path: Path) -> None:
    endpoint = HookEndpoint()
    async with serve(endpoint) as base:
        port = base.rsplit(":", 1)[1]
        spellings = {
            "octal": f"http://0177.0.0.1:{port}/octal",
            "hex": f"http://0x7f.0.0.1:{port}/hex",
            "integer": f"http://2130706433:{port}/integer",
            "short": f"http://127.1:{port}/short",
            "ipv6 loopback": f"http://[::1]:{port}/v6",
            "ipv4-mapped": f"http://[::ffff:127.0.0.1]:{port}/mapped",
            "unspecified": f"http://0.0.0.0:{port}/any",  # Linux connects 0.0.0.0 to this host
            "link-local": "http://169.254.169.254/latest/meta-data/",
            "a name": f"http://localhost:{port}/name",
        }
        # http allowed: the address, not the scheme, must be what refuses these.
        stack = await hook_stack(stack_factory, tmp_path, list(spellings.values()), HOOKS_ALLOW_HTTP=True)
        await send_and_wait(stack, "payment.succeeded", payment("pay_spellings", [(PRODUCT, 1)]))
        rows = await settled(stack, 3 * len(spellings))  # the licence key, the file, the hook grant
        assert endpoint.calls == []
    by_target = {r.target: r for r in rows}
    for name, url in spellings.items():
        row = by_target[url]
        assert (row.status, row.attempts, row.next_attempt_at) == ("refused", 1, None), name
    assert by_target[spellings["octal"]].last_error == "the host resolves to 127.0.0.1, a loopback address"
    assert by_target[spellings["link-local"]].last_error == "the host resolves to 169.254.169.254, a link-local address"


async def test_plain_http_is_refused_unless_allowed(stack_factory: Any, tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    endpoint = HookEndpoint()
    async with serve(endpoint) as base:
        # Private networks allowed: only the scheme can refuse it.
        stack = await hook_stack(stack_factory, tmp_path, [f"{base}/provision"], HOOKS_ALLOW_PRIVATE_NETWORKS=True)
        await send_and_wait(stack, "payment.succeeded", payment("pay_plain", [(PRODUCT, 1)]))
        rows = await settled(stack, 3)
        assert endpoint.calls == []
    assert all((r.status, r.attempts, r.last_error) == ("refused", 1, HTTP_REFUSED) for r in rows)
    assert f"hook {base}/provision is plain http: its deliveries will be refused" in caplog.text  # at start


async def test_plain_http_is_sent_with_hooks_allow_http(stack_factory: Any, tmp_path: Path) -> None:
    endpoint = HookEndpoint()
    async with serve(endpoint) as base:
        stack = await hook_stack(stack_factory, tmp_path, [f"{base}/provision"], HOOKS_ALLOW_PRIVATE_NETWORKS=True,
                                 HOOKS_ALLOW_HTTP=True)
        await send_and_wait(stack, "payment.succeeded", payment("pay_allowed", [(PRODUCT, 1)]))
        rows = await settled(stack, 3)
    assert {r.status for r in rows} == {"delivered"}
    assert len(endpoint.delivered()) == 3


async def test_a_failed_delivery_records_no_sql_parameters_secret_key_or_query(
        stack_factory: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    secret = generate_secret()
    keys: list[str] = []

    @python_hooks.on_entitlement("entitlement.granted")
    async def crm_sync(event_type: str, grant: dict[str, Any]) -> None:
        key = (grant.get("license_key") or {}).get("key") or "none"
        keys.append(key)
        raise RuntimeError(f"CRM refused the grant [SQL: INSERT INTO crm (key) VALUES (?)]\n"
                           f"[parameters: ('{key}', '{grant['email']}')]\nsigning with {secret} at "
                           f"https://crm.example.com/api/grants?api_key=sk_live_42#frag for {grant['email']}, "
                           f"key {key}")

    try:
        catalog = write_catalog(tmp_path)
        stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog), HOOKS_RETRY_BASE_SECONDS=30.0)
        await send_and_wait(stack, "payment.succeeded", payment("pay_scrub", [(PRODUCT, 1)]))

        async def attempted() -> list[DeliveryRow] | None:
            rows = await deliveries(stack)
            return rows if len(rows) == 2 and all(r.last_error for r in rows) else None

        rows = await wait_until(attempted, what="a failed attempt of each delivery")
    finally:
        python_hooks.remove(f"{crm_sync.__module__}.{crm_sync.__qualname__}")
    [key] = [k for k in keys if k != "none"]
    for row in rows:
        assert row.status == "pending" and row.attempts == 1  # retried later, as before
        error = row.last_error or ""
        assert error.startswith("RuntimeError: CRM refused the grant"), error
        assert "https://crm.example.com/api/grants" in error
        for leaked in (key, EMAIL, secret, "sk_live_42", "frag", "[parameters", "INSERT INTO"):
            assert leaked not in error, (leaked, error)
    hook_lines = "\n".join(r.getMessage() for r in caplog.records if r.name == "dodo_worker.hooks")
    assert "CRM refused the grant" in hook_lines
    for leaked in (key, secret, "sk_live_42"):
        assert leaked not in hook_lines


def test_scrub_drops_url_credentials_queries_and_fragments_and_keeps_plain_urls() -> None:
    text = ("ConnectError at https://user:pw@hooks.example.com:8443/p?token=abc#x, "
            "then http://[::1]:9/x?k=v and https://plain.example.com/ok")
    assert scrub(text) == ("ConnectError at https://hooks.example.com:8443/p "
                           "then http://[::1]:9/x and https://plain.example.com/ok")
