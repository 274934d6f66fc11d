"""Licence keys: random, readable, and looked up by hash.

A key is `PREFIX-ABCD-EFGH-...`: at least 128 bits from `secrets`, written in RFC 4648 base32
(A-Z, 2-7: no 0/1/8 to confuse with O/I/B) in groups. Lookups go through `key_hash`, the sha256
of the normalised key (upper case, no dashes or spaces), so `acme-abcd...` and `ACMEABCD...`
find the same grant. Keys are secrets: never log them.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets

from worker.entitlements.catalog import LicenseKeySpec

_SEPARATORS = str.maketrans("", "", "- \t\r\n")


def generate(spec: LicenseKeySpec | None = None) -> str:
    """A new key of `spec.bits` random bits, grouped by `spec.group_size`, after `spec.prefix`."""
    spec = spec or LicenseKeySpec()
    chars = math.ceil(spec.bits / 5)
    raw = secrets.token_bytes(math.ceil(chars * 5 / 8))
    body = base64.b32encode(raw).decode().rstrip("=")[:chars]
    groups = [body[i:i + spec.group_size] for i in range(0, len(body), spec.group_size)]
    if spec.prefix:
        groups.insert(0, spec.prefix.upper())
    return "-".join(groups)


def normalise(key: str) -> str:
    return key.translate(_SEPARATORS).upper()


def key_hash(key: str) -> str:
    """What GrantRow.license_key_hash holds: sha256 hex of the normalised key."""
    return hashlib.sha256(normalise(key).encode()).hexdigest()


def mask(key: str | None) -> str | None:
    """The key with all but its last group hidden, for human output where the key is not needed."""
    if not key:
        return key
    last = key.rsplit("-", 1)[-1][-4:]
    return f"…{last}"
