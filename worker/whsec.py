"""The Standard Webhooks scheme itself: `whsec_` secrets, `v1` signatures, the signature header.

Written with `hmac` rather than through the `standardwebhooks` package because that package's
Python verifier disagrees with the spec and with the Go and JavaScript reference libraries at the
edges a real deployment meets (tests/test_conformance.py runs the reference suites' vectors):

- it decodes secrets with `b64decode(secret + "==")`, so an unpadded secret whose length is 1
  short of a multiple of 4 fails, and it accepts secrets of any length;
- it stops at the first signature entry without a comma (`ValueError`) instead of skipping it;
- it decodes `v1` values leniently (`**` inside a signature is dropped, so it still matches);
- it reads the timestamp with `float()`, so `T.9`, `1.7e9` and `1_700_000_000` pass as `T`.

What this module does instead, as the spec (github.com/standard-webhooks/standard-webhooks,
spec/standard-webhooks.md) and the Go library do: a secret is 24 to 64 bytes of standard base64,
padded or not, with or without `whsec_`; the timestamp is ASCII digits only; the header is split
on spaces, entries without `,` or not `v1` are skipped, and each `v1` value is compared, in
constant time, with the canonical base64 of the expected HMAC (so any other spelling fails).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re

PREFIX = "whsec_"
MIN_KEY_BYTES, MAX_KEY_BYTES = 24, 64
TOLERANCE_SECONDS = 5 * 60

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_DIGITS = re.compile(r"[0-9]{1,19}")


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a `whsec_<base64>` secret; ValueError (naming no part of it) otherwise."""
    text = secret.removeprefix(PREFIX)
    if not text or not _BASE64.fullmatch(text):
        raise ValueError("a secret is not whsec_ followed by standard base64")
    unpadded = text.rstrip("=")
    if len(unpadded) % 4 == 1 or ("=" in text and len(text) % 4 != 0):
        raise ValueError("a secret is not whsec_ followed by standard base64 (bad length or padding)")
    try:
        key = base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a secret is not whsec_ followed by standard base64") from None
    if not MIN_KEY_BYTES <= len(key) <= MAX_KEY_BYTES:
        raise ValueError(f"a secret is {len(key)} bytes once decoded; Standard Webhooks secrets are "
                         f"{MIN_KEY_BYTES} to {MAX_KEY_BYTES} bytes")
    return key


def parse_timestamp(header: str) -> int | None:
    """Integer seconds, or None: no sign, no fraction, no exponent, no `_` (the spec's wording)."""
    return int(header) if _DIGITS.fullmatch(header) else None


def signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    """The `v1` value (canonical standard base64 of HMAC-SHA256 over `id.timestamp.body`)."""
    signed = message_id.encode() + b"." + str(timestamp).encode() + b"." + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def v1_values(header: str) -> list[str]:
    """Every `v1` value of a `webhook-signature` header, skipping malformed and other-version
    entries as the Go and JavaScript references do (`v1,a,b` offers `a`)."""
    values = []
    for entry in header.split(" "):
        parts = entry.split(",")
        if len(parts) >= 2 and parts[0] == "v1":
            values.append(parts[1])
    return values


def matches(expected: str, offered: list[str]) -> bool:
    """Constant-time comparison with every offered value (no early exit on the first match)."""
    want = expected.encode()
    found = False
    for value in offered:
        found |= hmac.compare_digest(want, value.encode("utf-8", "replace"))
    return found
