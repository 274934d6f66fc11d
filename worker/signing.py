"""Signing outgoing Standard Webhooks requests (the `send` command, custom hooks, tests)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook


def new_message_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def generate_secret() -> str:
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def signed_headers(secret: str, body: bytes | str, message_id: str | None = None,
                   timestamp: datetime | None = None) -> dict[str, str]:
    text = body.decode() if isinstance(body, bytes) else body
    message_id = message_id or new_message_id()
    timestamp = timestamp or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, timestamp, text)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }
