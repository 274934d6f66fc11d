"""The address of the client of a request, and the scheme it used, as far as they can be believed.

By default the socket peer: X-Forwarded-For is a header anyone can send. When the peer is one of
TRUSTED_PROXIES, the header's addresses are read from the right (each proxy appends the address
it saw) and the first one that is not itself a trusted proxy is the client. uvicorn's own proxy
header handling is turned off (worker/cli/serve.py) so that the peer seen here is the real one.
The same goes for X-Forwarded-Proto (whether the browser spoke https to the proxy): believed
from a trusted proxy only."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

from litestar import Request

from worker.settings import IPNetwork


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: Sequence[IPNetwork]) -> bool:
    return any(address in network for network in proxies)


def _trusted_peer(request: Request[Any, Any, Any], proxies: Sequence[IPNetwork]) -> bool:
    peer = _address(request.client.host if request.client else "")
    return peer is not None and bool(proxies) and _trusted(peer, proxies)


def scheme(request: Request[Any, Any, Any], proxies: Sequence[IPNetwork]) -> str:
    """"https" or "http": the connection's own scheme, or, from a trusted proxy, the last value
    of X-Forwarded-Proto (the one that proxy set; one before it may come from the client)."""
    if _trusted_peer(request, proxies):
        values = [part.strip().lower() for value in request.headers.getall("x-forwarded-proto", [])
                  for part in value.split(",") if part.strip()]
        if values and values[-1] in ("http", "https"):
            return values[-1]
    return request.url.scheme


def client_address(request: Request[Any, Any, Any], proxies: Sequence[IPNetwork]) -> str:
    peer = request.client.host if request.client else ""
    peer_address = _address(peer)
    if peer_address is None or not proxies or not _trusted(peer_address, proxies):
        return peer
    forwarded = [part for value in request.headers.getall("x-forwarded-for", [])
                 for part in value.split(",") if part.strip()]
    client = peer_address
    for hop in reversed(forwarded):
        address = _address(hop)
        if address is None:  # garbage from beyond the last proxy we trust: that proxy's client is it
            break
        client = address
        if not _trusted(address, proxies):
            break
    return str(client)
