"""What error text may keep when it is stored or logged: event errors (worker/dispatch.py) and
hook deliveries' `last_error` (worker/entitlements/delivery.py) go through `scrub`."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# What a database error says beyond its type and message: the statement, its parameters (or
# SQLAlchemy's note that it hid them) and PostgreSQL's DETAIL and HINT (which quote key values).
# Never stored nor logged: they may hold customers' data or secrets.
_SQL_DETAIL = re.compile(r"\[SQL: .*?\](?=\n|$)|\[parameters: [^\n]*|\[SQL parameters hidden[^\n]*"
                         r"|^(?:DETAIL|HINT): [^\n]*\n?", re.S | re.M)
# Secrets and personal data a driver's message may still quote (a trigger's or a check's text):
# webhook and hook secrets, licence keys (groups of 4+ base32 characters joined by dashes) and
# e-mail addresses.
_SECRETS = re.compile(r"whsec_[A-Za-z0-9+/=]+|\b(?:[A-Z0-9]{2,16}-)?(?:[A-Z2-7]{4,16}-){3,}[A-Z2-7]{1,16}\b"
                      r"|[^\s@'\"(),]+@[^\s@'\"(),]+")
# A URL quoted in a message (a hook's, a client library's): its credentials, query and fragment
# (tokens, signed links) are dropped by `redact_url`.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>`]+", re.I)


def redact_url(url: str) -> str:
    """The URL without credentials, query or fragment: what logs and stored errors may show."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<malformed URL>"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _url_in_text(match: re.Match[str]) -> str:
    url = match.group(0)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed URL>"
    if "@" not in parts.netloc and not parts.query and not parts.fragment and not url.endswith(("?", "#")):
        return url
    return redact_url(url)


def scrub(text: str) -> str:
    """`text` without SQL statements and parameters, secrets, licence keys, e-mail addresses, and
    URLs' credentials, queries and fragments."""
    text = re.sub(r"\n{2,}(?=\(Background)", "\n", _SQL_DETAIL.sub("", text))
    return _SECRETS.sub("[redacted]", _URL.sub(_url_in_text, text))
