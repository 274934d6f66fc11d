"""CSRF tokens: every console form carries one; a POST without the right one is refused (403)
before the handler runs, so nothing changes.

A signed-in operator's token is HMAC(session token, "csrf"): only someone holding the session
cookie can compute it, and it changes with the session. The sign-in form, before any session
exists, uses a double-submit cookie (a random value in a cookie and the same in the form)."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from markupsafe import Markup

FIELD = "csrf_token"
SIGNIN_COOKIE = "dodo_console_signin"


def session_token(session_secret: str) -> str:
    return hmac.new(session_secret.encode(), b"dodo-console csrf", hashlib.sha256).hexdigest()


def new_signin_token() -> str:
    return secrets.token_urlsafe(24)


def matches(expected: str, given: object) -> bool:
    """Constant-time comparison; anything but a non-empty string (absent, a file upload) fails."""
    return isinstance(given, str) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def hidden_input(token: str) -> Markup:
    """`<input type="hidden" name="csrf_token" ...>` for a form (`{{ csrf_field }}` in templates)."""
    return Markup('<input type="hidden" name="{}" value="{}">').format(FIELD, token)
