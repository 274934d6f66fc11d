"""Signed, expiring download tokens: `GET /v1/downloads/{token}` serves a file grant's file.

A token is `base64url(payload).base64url(hmac_sha256(key, payload))` where the payload is
`{"g": grant_id, "e": unix_expiry}`. It names only the grant, so revoking the grant refuses
every token already handed out (the route checks the grant's status on each download).

Decoding is strict: a token is accepted only exactly as it was issued (unpadded base64url, the
canonical spelling, a 32-byte MAC compared in constant time); anything else is `invalid` (403).

The key is DOWNLOAD_SIGNING_KEY, or else derived from WORKER_API_TOKEN, or else from the first
webhook secret: set DOWNLOAD_SIGNING_KEY in production so rotating those does not end links.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time

from worker.settings import Settings

_LABEL = b"dodo-worker download tokens v1"


class TokenError(Exception):
    """A token that cannot be used; `reason` is `invalid` (tampered, malformed) or `expired`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def signing_key(settings: Settings) -> bytes | None:
    """The HMAC key of download tokens, or None when no secret is configured (no links)."""
    for secret in (settings.DOWNLOAD_SIGNING_KEY, settings.WORKER_API_TOKEN):
        if secret is not None:
            return hmac.new(secret.get_secret_value().encode(), _LABEL, hashlib.sha256).digest()
    if settings.webhook_secrets:
        return hmac.new(settings.webhook_secrets[0].encode(), _LABEL, hashlib.sha256).digest()
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _unb64(text: str) -> bytes:
    """Strict: only the unpadded base64url alphabet, and only the one canonical spelling of the
    bytes (the decoder would silently drop junk characters and ignore stray low bits)."""
    if not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


def make_token(key: bytes, grant_id: str, ttl_seconds: int, now: float | None = None) -> str:
    expiry = int((now if now is not None else time.time()) + ttl_seconds)
    payload = json.dumps({"g": grant_id, "e": expiry}, separators=(",", ":")).encode()
    mac = hmac.new(key, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(mac)}"


def read_token(key: bytes, token: str, now: float | None = None) -> str:
    """The grant id of a valid token; TokenError otherwise."""
    return read_claims(key, token, now)[0]


def read_claims(key: bytes, token: str, now: float | None = None) -> tuple[str, int]:
    """The grant id and unix expiry of a valid token; TokenError otherwise. The MAC is checked in
    constant time before anything in the payload is trusted, and before the expiry is looked at."""
    try:
        payload_part, mac_part = token.split(".", 1)
        payload, mac = _unb64(payload_part), _unb64(mac_part)
    except (ValueError, UnicodeError, binascii.Error):
        raise TokenError("invalid") from None
    if len(mac) != hashlib.sha256().digest_size:
        raise TokenError("invalid")
    if not hmac.compare_digest(mac, hmac.new(key, payload, hashlib.sha256).digest()):
        raise TokenError("invalid")
    try:
        data = json.loads(payload)
        grant_id, expiry = str(data["g"]), int(data["e"])
    except (ValueError, KeyError, TypeError):
        raise TokenError("invalid") from None
    if expiry < (now if now is not None else time.time()):
        raise TokenError("expired")
    return grant_id, expiry


def download_url(settings: Settings, grant_id: str, base_url: str | None = None,
                 ttl_seconds: int | None = None) -> str | None:
    """An absolute download link for a file grant, or None when no signing key is configured.

    `base_url` is the request's own base in the web process; elsewhere PUBLIC_URL, else localhost."""
    key = signing_key(settings)
    if key is None:
        return None
    base = (base_url or settings.PUBLIC_URL or f"http://localhost:{settings.PORT}").rstrip("/")
    token = make_token(key, grant_id, ttl_seconds or settings.DOWNLOAD_TOKEN_TTL_SECONDS)
    return f"{base}/v1/downloads/{token}"
