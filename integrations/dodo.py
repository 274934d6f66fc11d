"""Dodo Payments API client: the official SDK (`AsyncDodoPayments`) configured from settings.

- `create_client(settings)` builds the SDK client, or returns None when no API key is set.
  The SDK defaults to `live_mode`; we pass DODO_PAYMENTS_ENVIRONMENT (default `test_mode`)
  explicitly, or DODO_PAYMENTS_BASE_URL instead of it (the SDK refuses both).
- `DodoReader` wraps a client for reading lists and objects as plain JSON (the payload of a
  synthetic event must keep every field Dodo sent, known to the SDK's models or not). It counts
  every request, waits out 429s as long as `Retry-After` asks (up to `max_rate_limit_wait`
  seconds in all), and retries 5xx, timeouts and connection errors with exponential back-off.
  (Handlers' `ctx.dodo` is the plain SDK client, with the SDK's own retries.)

The API key is a `SecretStr` in settings and only ever reaches the SDK; nothing here logs it,
and `KeyRedactor` scrubs it from the SDK's and httpx's own log lines in case a debug level ever
prints headers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from dodopayments import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncDodoPayments,
    AuthenticationError,
    InternalServerError,
    NotFoundError,
    Omit,
    RateLimitError,
)
from dodopayments.types import LicenseActivateResponse

from worker.settings import Settings

log = logging.getLogger("dodo_worker.dodo")
_T = TypeVar("_T")

SDK_MAX_RETRIES = 4
TIMEOUT = httpx.Timeout(30.0, connect=5.0)
PAGE_SIZE = 100  # the API's maximum
DEFAULT_RETRY_AFTER = 5.0


class KeyRedactor(logging.Filter):
    """Replaces the API key in any log record that reaches the SDK's or httpx's loggers."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secret:
            message = record.getMessage()
            if self.secret in message:
                record.msg, record.args = message.replace(self.secret, "***"), None
        return True


def create_client(settings: Settings, *, max_retries: int = SDK_MAX_RETRIES) -> AsyncDodoPayments | None:
    """The SDK client for reconciliation and handlers (`ctx.dodo`); None without an API key."""
    if settings.DODO_PAYMENTS_API_KEY is None:
        return None
    key = settings.DODO_PAYMENTS_API_KEY.get_secret_value()
    # A logger's filters see only its own records, not its children's: name each one that logs.
    for name in ("dodopayments", "dodopayments._base_client", "httpx", "httpcore.http11"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, KeyRedactor) and f.secret == key for f in logger.filters):
            logger.addFilter(KeyRedactor(key))
    target: dict[str, Any]
    if settings.DODO_PAYMENTS_BASE_URL:
        target = {"base_url": settings.DODO_PAYMENTS_BASE_URL}
    else:
        # base_url=None tells the SDK to ignore a DODO_PAYMENTS_BASE_URL it might read itself.
        target = {"environment": settings.DODO_PAYMENTS_ENVIRONMENT, "base_url": None}
    return AsyncDodoPayments(bearer_token=key, max_retries=max_retries, timeout=TIMEOUT, **target)


class DodoAPIError(Exception):
    """The API could not be read; the message names the call and status, never the key."""


class DodoNotFound(DodoAPIError):
    """404: no such object."""


@dataclass
class DodoReader:
    """Reads Dodo's API as JSON through the SDK, counting every HTTP request and waiting out
    rate limits and transient failures.

    The retry policy lives here rather than in the SDK (the reader's copy of the client has
    `max_retries=0`) so that `calls` counts each request sent, and a 429 is waited out for as
    long as its `Retry-After` says (the SDK caps that at 60 s), up to `max_rate_limit_wait` in all.
    """

    client: AsyncDodoPayments
    max_rate_limit_wait: float = 600.0
    transient_tries: int = SDK_MAX_RETRIES + 1
    backoff_base: float = 0.5
    calls: int = 0
    rate_limited: int = 0
    waited_seconds: float = 0.0
    _client: AsyncDodoPayments = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._client = self.client.with_options(max_retries=0)

    async def list_page(self, path: str, page_number: int, page_size: int = PAGE_SIZE,
                        **filters: Any) -> list[dict[str, Any]]:
        """One page of a list endpoint (`/payments`, `/refunds`, ...): its `items`."""
        query = {k: v for k, v in filters.items() if v is not None}
        query.update(page_number=page_number, page_size=page_size)
        body = await self._get(path, query)
        items = body.get("items") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise DodoAPIError(f"GET {path}: the answer has no 'items' list")
        return [item for item in items if isinstance(item, dict)]

    async def retrieve(self, path: str) -> dict[str, Any]:
        """One object (`/payments/{id}`, ...)."""
        body = await self._get(path, None)
        if not isinstance(body, dict):
            raise DodoAPIError(f"GET {path}: the answer is not an object")
        return body

    async def _get(self, path: str, query: Mapping[str, Any] | None) -> Any:
        waited = 0.0
        failures = 0
        while True:
            self.calls += 1
            try:
                # The SDK's generic GET: its auth, base URL and errors; our JSON and retries.
                return await self._client.get(path, cast_to=object, options={"params": dict(query or {})})
            except RateLimitError as exc:
                delay = retry_after(exc.response.headers)
                if waited + delay > self.max_rate_limit_wait:
                    raise DodoAPIError(f"GET {path}: still rate limited (429) after {waited:.0f}s") from None
                self.rate_limited += 1
                log.warning("Dodo API rate limit on GET %s; waiting %.1fs as asked", path, delay)
                await asyncio.sleep(delay)
                waited += delay
                self.waited_seconds += delay
                continue
            except AuthenticationError:
                raise DodoAPIError(f"GET {path}: the API key was refused (HTTP 401); check "
                                   "DODO_PAYMENTS_API_KEY and DODO_PAYMENTS_ENVIRONMENT") from None
            except InternalServerError as exc:
                reason = f"HTTP {exc.status_code}"
            except NotFoundError:
                raise DodoNotFound(f"GET {path}: HTTP 404") from None
            except APIStatusError as exc:
                raise DodoAPIError(f"GET {path}: HTTP {exc.status_code}") from None
            except APIConnectionError as exc:
                reason = "timed out" if isinstance(exc, APITimeoutError) else "cannot connect"
            failures += 1
            if failures >= self.transient_tries:
                raise DodoAPIError(f"GET {path}: {reason} ({failures} tries)") from None
            delay = min(self.backoff_base * 2 ** (failures - 1), 8.0) * random.uniform(0.8, 1.2)
            log.warning("Dodo API GET %s: %s; trying again in %.1fs", path, reason, delay)
            await asyncio.sleep(delay)


def retry_after(headers: Mapping[str, str]) -> float:
    """Seconds a 429 asks us to wait (`retry-after-ms` or `Retry-After`), with a little jitter."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            return max(0.0, float(raw) * scale) + random.uniform(0, 0.1)
        except ValueError:
            from datetime import UTC, datetime
            from email.utils import parsedate_to_datetime

            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError):
                continue
            return max(0.0, (when - datetime.now(UTC)).total_seconds())
    return DEFAULT_RETRY_AFTER


# Dodo's public licence endpoints ---------------------------------------------------------------
# They sit in the request path of a customer's app: a short timeout and no SDK retries (the
# SDK's back-off would keep the app waiting), then our own fallback (see
# worker/entitlements/licenses.py); the app retries as after any failure.
LICENSE_TIMEOUT = httpx.Timeout(4.0, connect=2.0)
LICENSE_MAX_RETRIES = 0
# `/licenses/*` need no API key (the spec gives them no security; Dodo's docs call them public),
# but the SDK will not start without a bearer token: it gets a placeholder, and every licence
# call drops the Authorization header, so the merchant's key never travels with them.
_PUBLIC = "public-licence-endpoints"
_NO_AUTH: dict[str, str | Omit] = {"Authorization": Omit()}


def create_license_client(settings: Settings, *, timeout: httpx.Timeout = LICENSE_TIMEOUT,
                          max_retries: int = LICENSE_MAX_RETRIES) -> AsyncDodoPayments:
    """An SDK client for the public licence endpoints, at DODO_PAYMENTS_BASE_URL or the
    DODO_PAYMENTS_ENVIRONMENT's host; it needs no DODO_PAYMENTS_API_KEY."""
    if settings.DODO_PAYMENTS_BASE_URL:
        return AsyncDodoPayments(bearer_token=_PUBLIC, base_url=settings.DODO_PAYMENTS_BASE_URL,
                                 timeout=timeout, max_retries=max_retries)
    return AsyncDodoPayments(bearer_token=_PUBLIC, environment=settings.DODO_PAYMENTS_ENVIRONMENT, base_url=None,
                             timeout=timeout, max_retries=max_retries)


class DodoUnreachable(Exception):
    """Dodo did not answer: connection error, timeout, 429 or 5xx (`reason` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DodoRefused(Exception):
    """Dodo answered 4xx: its status, `code` (None when its body has none) and message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(f"HTTP {status} {code}")
        self.status = status
        self.code = code
        self.message = message


def _refusal(exc: APIStatusError) -> DodoRefused | DodoUnreachable:
    if exc.status_code == 429 or exc.status_code >= 500:
        return DodoUnreachable(f"HTTP {exc.status_code}")
    body = exc.body if isinstance(exc.body, dict) else {}
    code, message = body.get("code"), body.get("message")
    return DodoRefused(exc.status_code, code if isinstance(code, str) else None,
                       message[:500] if isinstance(message, str) and message else f"HTTP {exc.status_code}")


@dataclass
class DodoLicenses:
    """Dodo's `POST /licenses/activate`, `/validate`, `/deactivate` through the official SDK.
    Raises DodoRefused (pass it on) or DodoUnreachable (answer without Dodo, or 503)."""

    client: AsyncDodoPayments

    async def activate(self, license_key: str, name: str) -> LicenseActivateResponse:
        return await self._call(self.client.licenses.activate(license_key=license_key, name=name,
                                                              extra_headers=_NO_AUTH))

    async def validate(self, license_key: str, instance_id: str | None) -> bool:
        answer = await self._call(self.client.licenses.validate(
            license_key=license_key, license_key_instance_id=instance_id, extra_headers=_NO_AUTH))
        return bool(answer.valid)

    async def deactivate(self, license_key: str, instance_id: str) -> None:
        await self._call(self.client.licenses.deactivate(license_key=license_key, license_key_instance_id=instance_id,
                                                         extra_headers=_NO_AUTH))

    async def close(self) -> None:
        await self.client.close()

    @staticmethod
    async def _call(request: Awaitable[_T]) -> _T:
        try:
            return await request
        except APIStatusError as exc:
            raise _refusal(exc) from None
        except APIConnectionError as exc:
            raise DodoUnreachable("timed out" if isinstance(exc, APITimeoutError) else "cannot connect") from None
