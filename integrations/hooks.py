"""Outbound custom hooks: one signed POST to a merchant's URL, guarded against SSRF.

A hook URL comes from the catalog, so it is trusted more than user input, but a typo, a DNS
record pointing inside the network, or a record that changes between check and use (DNS
rebinding) must not turn the worker into a way to reach `169.254.169.254` or an internal admin
port. So:

- only https is called (plain http too with HOOKS_ALLOW_HTTP), and a host written as a number in
  any form (`0177.0.0.1`, `0x7f.0.0.1`, `2130706433`, `127.1`) is read as the address it means
  (integrations/hook_urls.py); a URL that can never be called is `refused`, not retried.

and, unless HOOKS_ALLOW_PRIVATE_NETWORKS:

- every address the host resolves to must be public: loopback, private, link-local, multicast,
  reserved, unspecified and shared (CGNAT) addresses are refused, and so are IPv6 forms that
  embed such an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4, Teredo);
- the name is resolved once, inside httpcore's network backend, and the socket is opened to the
  very address that was checked. TLS still uses the host name (SNI and certificate checks) and
  the Host header is the URL's, so nothing changes for the receiver;
- redirects are not followed (a 3xx is a failed attempt), proxies from the environment are not
  used, and the whole attempt is bounded by HOOKS_TIMEOUT_SECONDS.

The request is signed with Standard Webhooks (HOOKS_SIGNING_KEY); `webhook-id` is the outbox
row's id, the same on every retry, so a receiver can drop duplicates.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

from integrations.hook_urls import parse_host, vet_url
from worker.scrub import redact_url
from worker.signing import signed_headers

Resolver = Callable[[str, int], Awaitable[list[str]]]
AddressCheck = Callable[[str], str | None]  # why an address is refused, or None
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

USER_AGENT = "dodo-worker-hooks/1"
redact = redact_url  # the URL without credentials, query or fragment (logs, `last_error`, the CLI)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # carrier-grade NAT; not "private" to ipaddress


class DestinationRefused(Exception):
    """The URL may not be called (a private address, a bad scheme); never worth a retry."""


@dataclass(frozen=True)
class HookResult:
    outcome: str  # delivered, failed, refused
    detail: str  # "HTTP 204", "HTTP 500", "ConnectError: ...", "resolves to a loopback address"
    status_code: int | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if ip.sixtofour is not None:
        return ip.sixtofour
    return None


def refusal_reason(address: str | IPAddress) -> str | None:
    """Why `address` may not be called without HOOKS_ALLOW_PRIVATE_NETWORKS, or None if it may."""
    try:
        ip = address if not isinstance(address, str) else ipaddress.ip_address(address)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.teredo is not None:
            return "Teredo"
        inner = _embedded_ipv4(ip)
        if inner is not None:
            reason = refusal_reason(inner)
            return f"IPv4-embedding {reason}" if reason else None
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("shared (CGNAT)", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("reserved", ip.is_reserved),
        ("non-global", not ip.is_global),
    )
    return next((name for name, hit in checks if hit), None)


async def system_resolve(host: str, port: int) -> list[str]:
    """Every address of `host`, in the order the system resolver prefers."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]), None)
    return list(seen)


def _ip_literal(host: str) -> str | None:
    """The address `host` is written as (any IPv4 form, see hook_urls), or None for a name."""
    try:
        parsed = parse_host(host)
    except ValueError:
        return None
    return None if isinstance(parsed, str) else str(parsed)


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend that resolves, checks and connects to the checked address."""

    def __init__(self, allow_private: bool, resolver: Resolver = system_resolve,
                 inner: httpcore.AsyncNetworkBackend | None = None, check: AddressCheck | None = None) -> None:
        self.allow_private = allow_private
        self.resolver = resolver
        self.check: AddressCheck = check or refusal_reason
        self.inner = inner or httpcore.AnyIOBackend()

    async def addresses(self, host: str, port: int, resolve_seconds: float | None) -> list[str]:
        literal = _ip_literal(host)
        if literal is not None:
            addresses = [literal]
        else:
            try:
                addresses = await asyncio.wait_for(self.resolver(host, port), resolve_seconds)
            except (OSError, TimeoutError) as exc:
                raise httpcore.ConnectError(f"cannot resolve the host: {exc}") from None
        if not addresses:
            raise httpcore.ConnectError("the host has no address")
        if not self.allow_private:
            for address in addresses:
                reason = self.check(address)
                if reason is not None:
                    raise DestinationRefused(f"the host resolves to {address}, a {reason} address")
        return addresses

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for address in await self.addresses(host, port, timeout):
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,  # noqa: ASYNC109
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise DestinationRefused("unix sockets are not hook destinations")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx transport whose connections go through GuardedBackend (and never through a proxy)."""

    def __init__(self, allow_private: bool, resolver: Resolver = system_resolve,
                 verify: ssl.SSLContext | bool = True, check: AddressCheck | None = None) -> None:
        super().__init__(verify=False, trust_env=False)  # a throwaway pool: replaced at once, below
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(verify=verify, trust_env=False),
            network_backend=GuardedBackend(allow_private, resolver, check=check),
            max_connections=20, max_keepalive_connections=5,
        )


def hook_client(timeout: float, allow_private: bool, resolver: Resolver = system_resolve,
                check: AddressCheck | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=GuardedTransport(allow_private, resolver, check=check), timeout=timeout,
                             follow_redirects=False, trust_env=False)


async def send_hook(client: httpx.AsyncClient, url: str, body: bytes, *, message_id: str, secret: str,
                    seconds: float, allow_http: bool = False) -> HookResult:
    """POST `body` to `url`, signed; a 2xx is delivered, anything else a failure, never raises.
    A URL that may never be called (integrations/hook_urls.py) is `refused` without a connection."""
    vetted = vet_url(url, allow_http=allow_http)
    if vetted.url is None:
        return HookResult("refused", vetted.refusal or "refused")
    url = vetted.url
    headers = signed_headers(secret, body, message_id) | {"user-agent": USER_AGENT}
    try:
        async with asyncio.timeout(seconds):
            async with client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code  # the body is not read: nothing in it matters
    except DestinationRefused as exc:
        return HookResult("refused", str(exc))
    except (TimeoutError, httpx.TimeoutException):  # before OSError: TimeoutError is one
        return HookResult("failed", f"no answer within {seconds:g}s")
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        detail = f"{type(exc).__name__}: {exc}".replace(url, redact(url))  # no query secrets in logs
        return HookResult("failed", detail[:300])
    if 200 <= status < 300:
        return HookResult("delivered", f"HTTP {status}", status)
    if 300 <= status < 400:
        return HookResult("failed", f"HTTP {status} (redirects are not followed)", status)
    return HookResult("failed", f"HTTP {status}", status)
