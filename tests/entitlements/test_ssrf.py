"""The SSRF guard of outbound hooks: which addresses are refused, and that the connection goes to
the address that was checked (so a DNS answer that changes cannot sneak past the check)."""

from __future__ import annotations

import pytest

from integrations.hooks import hook_client, refusal_reason, send_hook
from tests.entitlements.receiver import HookEndpoint, serve
from tests.support import free_port
from worker.signing import generate_secret


@pytest.mark.parametrize(("address", "reason"), [
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.10", "private"),
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "IPv4-embedding loopback"),
    ("::ffff:10.0.0.1", "IPv4-embedding private"),
    ("::ffff:169.254.169.254", "IPv4-embedding link-local"),
    ("64:ff9b::a9fe:a9fe", "IPv4-embedding link-local"),  # NAT64 of 169.254.169.254
    ("2002:7f00:1::", "IPv4-embedding loopback"),  # 6to4 of 127.0.0.1
    ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("240.0.0.1", "private"),
    ("192.0.2.1", "private"),  # TEST-NET-1, documentation
    ("not-an-ip", "not an IP address"),
])
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    assert refusal_reason(address) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111",
                                     "::ffff:8.8.8.8"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal_reason(address) is None


async def _send(url: str, allow_private: bool = False, **client_options: object) -> tuple[str, str]:
    """One attempt; plain http allowed (the endpoints here are http, the https rule has its own test)."""
    async with hook_client(2.0, allow_private, **client_options) as client:  # type: ignore[arg-type]
        result = await send_hook(client, url, b"{}", message_id="dlv_test", secret=generate_secret(), seconds=2.0,
                                 allow_http=True)
    return result.outcome, result.detail


async def test_private_destinations_are_refused_before_any_connection() -> None:
    endpoint = HookEndpoint()
    async with serve(endpoint) as base:
        port = base.rsplit(":", 1)[1]
        for url in (f"{base}/hook", f"http://localhost:{port}/hook", f"http://[::ffff:127.0.0.1]:{port}/hook",
                    "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/", "http://0.0.0.0:9/"):
            outcome, detail = await _send(url)
            assert outcome == "refused", (url, detail)
        assert await _send("file:///etc/passwd") == ("refused", "scheme 'file' is not http(s)")
        assert endpoint.calls == []
        assert (await _send(f"{base}/hook", allow_private=True))[0] == "delivered"
        assert len(endpoint.calls) == 1


async def test_a_name_with_any_private_address_is_refused() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.5"]

    outcome, detail = await _send("http://mixed.example.test/hook", resolver=resolver)
    assert (outcome, detail) == ("refused", "the host resolves to 10.0.0.5, a private address")


async def test_dns_rebinding_cannot_swap_the_checked_address() -> None:
    """The name first resolves to an allowed address, then (rebound) to a refused one. The
    request must go to the address that was checked, resolved once; the rebound answer is refused.
    127.0.0.2 plays the public address here (the check below allows only it)."""
    port = free_port()
    public, internal = HookEndpoint(), HookEndpoint()
    answers = [["127.0.0.2"], ["127.0.0.1"], ["127.0.0.1"]]
    asked: list[str] = []

    async def rebinding_resolver(host: str, _port: int) -> list[str]:
        asked.append(host)
        return answers[len(asked) - 1]

    def check(address: str) -> str | None:
        return None if address == "127.0.0.2" else "internal"

    async with serve(public, "127.0.0.2", port), serve(internal, "127.0.0.1", port):
        url = f"http://hooks.rebind.test:{port}/provision"
        first = await _send(url, resolver=rebinding_resolver, check=check)
        second = await _send(url, resolver=rebinding_resolver, check=check)

    assert first == ("delivered", "HTTP 204")
    assert second == ("refused", "the host resolves to 127.0.0.1, a internal address")
    assert asked == ["hooks.rebind.test", "hooks.rebind.test"]  # once per connection, never again
    assert [(c.path, c.headers["host"]) for c in public.calls] == [("/provision", f"hooks.rebind.test:{port}")]
    assert internal.calls == []


async def test_redirects_are_not_followed() -> None:
    endpoint = HookEndpoint(status=307)
    async with serve(endpoint) as base:
        outcome, detail = await _send(f"{base}/hook", allow_private=True)
    assert (outcome, detail) == ("failed", "HTTP 307 (redirects are not followed)")
    assert len(endpoint.calls) == 1
