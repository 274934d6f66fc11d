"""Signing outgoing Standard Webhooks requests (the `send` command, custom hooks, tests)."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from worker import whsec


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def generate_secret() -> str:
    """A new `whsec_` secret of 32 random bytes (the spec allows 24 to 64)."""
    return whsec.PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(secret: str, body: bytes | str, message_id: str | None = None,
                   timestamp: datetime | None = None) -> dict[str, str]:
    raw = body.encode() if isinstance(body, str) else body
    message_id = message_id or new_message_id()
    seconds = int((timestamp or datetime.now(UTC)).timestamp())
    signature = whsec.signature(whsec.decode_secret(secret), message_id, seconds, raw)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(seconds),
        "webhook-signature": f"v1,{signature}",
        "content-type": "application/json",
    }
