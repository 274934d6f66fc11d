"""Standard Webhooks verification against every configured secret (rotation)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

REQUIRED_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SignatureError(Exception):
    """The request is not a correctly signed, fresh webhook. `reason` is safe to show."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class Verifier:
    """Verify raw bodies against several secrets; the first that matches wins."""

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is needed")
        self._webhooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> None:
        wanted = {name: headers.get(name) for name in REQUIRED_HEADERS}
        missing = [name for name, value in wanted.items() if not value]
        if missing:
            raise SignatureError("missing_headers", f"missing header(s): {', '.join(missing)}")
        clean = {k: v for k, v in wanted.items() if v is not None}
        last_problem = "no matching signature"
        for webhook in self._webhooks:
            try:
                webhook.verify(body, clean, json_parse=False)
                return
            except WebhookVerificationError as exc:
                message = str(exc)
                if "timestamp" in message.lower() or "Invalid Signature Headers" in message:
                    # The timestamp is the same for every secret: no need to try the others.
                    raise SignatureError("timestamp", _timestamp_detail(message)) from None
                last_problem = "no matching signature"
            except (ValueError, UnicodeDecodeError):
                # Malformed signature header (no "v1," part, bad base64) or a body that is not
                # text: it cannot carry a valid signature.
                last_problem = "malformed signature header or body"
        raise SignatureError("signature", last_problem)


def _timestamp_detail(message: str) -> str:
    if "old" in message:
        return "webhook-timestamp is more than 5 minutes in the past"
    if "new" in message:
        return "webhook-timestamp is more than 5 minutes in the future"
    return "webhook-timestamp is not a unix time in seconds"
