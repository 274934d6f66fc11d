"""Which hook URLs may be called at all, and the host each one really names.

Browsers, curl and the C resolver (`inet_aton`) read `0177.0.0.1` (octal), `0x7f.0.0.1` (hex),
`2130706433` (one 32-bit number) and `127.1` (short forms) as 127.0.0.1. So a host that ends in a
number is parsed here as the WHATWG URL standard's IPv4 parser does and put back in dotted form
before anything else sees it: the address check (integrations/hooks.py, at connect time) then
checks the address that will be dialled, and a form httpx would reject (`0177.0.0.1`) is not a
"malformed URL" retried for days but the address it means. A number that is no address (a part
over 255, 5 parts) is a refusal. IPv6 literals are parsed by `ipaddress`.

Plain http is refused unless HOOKS_ALLOW_HTTP: a hook body carries licence keys and download links.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

HTTP_REFUSED = ("plain http is refused: hook bodies carry licence keys and download links; use https "
                "(HOOKS_ALLOW_HTTP=true allows http, e.g. for a test endpoint)")
_DIGITS = {8: frozenset("01234567"), 10: frozenset("0123456789"), 16: frozenset("0123456789abcdefABCDEF")}


class NotAnAddress(ValueError):
    """A host that ends in a number but is no IPv4 address (`1.2.3.256`, `1.2.3.4.5`, `0x1g`)."""


@dataclass(frozen=True)
class Vetted:
    url: str | None  # what to send to (the host in canonical form), or None when refused
    refusal: str | None = None


def _number(part: str) -> int | None:
    """A WHATWG IPv4 number part: `0x…` hex, `0…` octal, else decimal; None if it is none."""
    radix = 10
    if part[:2] in ("0x", "0X"):
        radix, part = 16, part[2:]
        if not part:
            return 0
    elif len(part) > 1 and part.startswith("0"):
        radix, part = 8, part[1:]
    if not part or not set(part) <= _DIGITS[radix]:  # int() alone would take "1_0" and " 1"
        return None
    return int(part, radix)


def _ends_in_a_number(parts: list[str]) -> bool:
    last = parts[-1]
    return (last.isascii() and last.isdigit()) or (last[:2] in ("0x", "0X") and _number(last) is not None)


def parse_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address `host` names in any of the forms the URL standard accepts; None when the
    host is a name. Raises NotAnAddress for a host that ends in a number but is no address."""
    parts = host.split(".")
    if parts[-1] == "" and len(parts) > 1:
        parts.pop()  # a trailing dot: `127.0.0.1.` is 127.0.0.1
    if not parts or not parts[-1] or not _ends_in_a_number(parts):
        return None
    if len(parts) > 4:
        raise NotAnAddress(f"{host} ends in a number but has more than 4 parts")
    numbers = [_number(p) if p else None for p in parts]
    if any(n is None for n in numbers):
        raise NotAnAddress(f"{host} ends in a number but is not an IPv4 address")
    values = [n for n in numbers if n is not None]
    if any(n > 255 for n in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        raise NotAnAddress(f"{host} is out of the IPv4 range")
    total = values[-1]
    for index, n in enumerate(values[:-1]):
        total += n * 256 ** (3 - index)
    return ipaddress.IPv4Address(total)


def parse_host(host: str) -> IPAddress | str:
    """The address a URL's host (brackets or not) is, or the name itself (lowercased)."""
    bare = host.strip("[]") if host.startswith("[") else host
    if ":" in bare:
        return ipaddress.IPv6Address(bare)  # ValueError when it is not one
    return parse_ipv4(bare) or bare.lower()


def _with_host(parts: SplitResult, host: str) -> str:
    userinfo, _, _ = parts.netloc.rpartition("@")
    port = f":{parts.port}" if parts.port is not None else ""
    netloc = f"{userinfo}@" if userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{netloc}{host}{port}"))


def vet_url(url: str, *, allow_http: bool) -> Vetted:
    """Refuse what can never be a hook destination (a bad scheme, plain http unless allowed, a
    malformed URL or host); else the URL to send to, its numeric host in dotted form."""
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme.lower(), parts.hostname
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return Vetted(None, "malformed URL")
    if scheme not in ("http", "https"):
        return Vetted(None, f"scheme {scheme!r} is not http(s)")
    if scheme == "http" and not allow_http:
        return Vetted(None, HTTP_REFUSED)
    if not host:
        return Vetted(None, "the URL has no host")
    try:
        parsed = parse_host(host)
    except ValueError as exc:
        return Vetted(None, f"the host is not a valid address: {exc}")
    if isinstance(parsed, ipaddress.IPv4Address) and str(parsed) != host:
        url = _with_host(parts, str(parsed))
    try:
        httpx.URL(url)
    except httpx.InvalidURL as exc:
        return Vetted(None, f"malformed URL: {exc}")
    return Vetted(url)
