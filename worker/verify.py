"""Standard Webhooks verification against every configured secret (rotation).

The scheme itself (secrets, header parsing, the HMAC) is in worker/whsec.py.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from worker import whsec

REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SignatureError(Exception):
    """The request is not a correctly signed, fresh webhook. `reason` is safe to show."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Verifier:
    """Verify raw bodies against several secrets; any one that matches is enough."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        self._keys = [whsec.decode_secret(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str], now: float | None = None) -> None:
        wanted = {name: headers.get(name) or "" for name in REQUIRED_HEADERS}
        missing = [name for name, value in wanted.items() if not value]
        if missing:
            raise SignatureError("missing_headers", f"missing header(s): {', '.join(missing)}")
        timestamp = whsec.parse_timestamp(wanted["webhook-timestamp"])
        if timestamp is None:
            raise SignatureError("timestamp", "webhook-timestamp is not a unix time in whole seconds")
        age = (time.time() if now is None else now) - timestamp
        if age > whsec.TOLERANCE_SECONDS:
            raise SignatureError("timestamp", "webhook-timestamp is more than 5 minutes in the past")
        if age < -whsec.TOLERANCE_SECONDS:
            raise SignatureError("timestamp", "webhook-timestamp is more than 5 minutes in the future")
        offered = whsec.v1_values(wanted["webhook-signature"])
        if not offered:
            raise SignatureError("signature", "webhook-signature has no v1 entry")
        message_id = wanted["webhook-id"]
        if not any([whsec.matches(whsec.signature(key, message_id, timestamp, body), offered)
                    for key in self._keys]):  # a list, not a generator: try every key, always
            raise SignatureError("signature", "no matching signature")
