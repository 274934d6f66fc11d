"""Settings from the environment and `.env`, with the names the README documents.

Secrets are `SecretStr` so they never show up in a repr, a log line or an error.
"""

from __future__ import annotations

import ipaddress
import re
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.whsec import decode_secret

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///./dodo-worker.db"


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line and never holds a secret."""


BUILTIN_HANDLERS = "handlers.entitlements"


def split_secrets(raw: str) -> list[str]:
    """Several webhook secrets may be given, separated by commas or white space (rotation)."""
    return [part for part in re.split(r"[\s,]+", raw.strip()) if part]


def check_whsec(secret: str) -> None:
    """Raise ValueError unless `secret` is a Standard Webhooks secret (worker/whsec.py)."""
    decode_secret(secret)


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(raw: str) -> list[IPNetwork]:
    """`10.0.0.1, 10.1.0.0/16, ::1` as networks; ValueError names the entry that is not one."""
    networks = []
    for part in split_secrets(raw):
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or network") from None
    return networks


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=True
    )

    DODO_PAYMENTS_WEBHOOK_KEY: SecretStr | None = None
    DODO_PAYMENTS_API_KEY: SecretStr | None = None
    DODO_PAYMENTS_ENVIRONMENT: Literal["test_mode", "live_mode"] = "test_mode"
    DODO_PAYMENTS_BASE_URL: str | None = None
    DATABASE_URL: str = DEFAULT_DATABASE_URL
    REDIS_URL: str | None = None
    WORKER_API_TOKEN: SecretStr | None = None
    ENTITLEMENTS_FILE: Path | None = None
    PORT: int = Field(default=8000, ge=1, le=65535)
    HANDLER_MODULES: str = ""
    MAX_ATTEMPTS: int = Field(default=8, ge=1, le=100)
    RETRY_BASE_SECONDS: float = Field(default=5.0, gt=0)
    HOOKS_SIGNING_KEY: SecretStr | None = None
    HOOKS_ALLOW_PRIVATE_NETWORKS: bool = False
    # Plain http hook URLs are `refused` unless this is set: hook bodies carry licence keys and
    # download links (the test kit sets it, its hook catcher is http://127.0.0.1).
    HOOKS_ALLOW_HTTP: bool = False

    # Advanced knobs (the README's "Advanced, rarely needed" line, docs/operations.md); defaults suit most deployments.
    HOST: str = "0.0.0.0"  # noqa: S104 - a web process listens on every interface by default
    WEBHOOK_MAX_BYTES: int = Field(default=256 * 1024, ge=1024)
    # A client that has sent its headers must send the whole body within this time (slow bodies
    # would otherwise hold a connection slot for as long as they like); 408 after it.
    WEBHOOK_READ_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    # ... and its request line and headers within this time of connecting (or of the previous
    # response on a keep-alive connection); else the connection is closed (`web`, `dev`).
    HTTP_HEADER_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    # How long a new webhook waits for others to share its arq job (worker/web/inbox_writer.py):
    # fewer jobs, less CPU for the worker, for a few ms more latency; 0 queues each batch at once.
    WEBHOOK_ENQUEUE_WINDOW_SECONDS: float = Field(default=0.01, ge=0, le=1)
    QUEUE_NAME: str = "dodo-worker:queue"
    JOB_TIMEOUT_SECONDS: int = Field(default=120, ge=1)
    # How long a claim holds an event without its worker's heartbeat (renewed every third of it):
    # a dead worker's events are taken over this long after its last renewal.
    LEASE_SECONDS: float = Field(default=10.0, ge=1)
    # An event whose lease ran out this many times in a row (it kills or stalls workers) is `dead`.
    QUARANTINE_AFTER_LOST_LEASES: int = Field(default=3, ge=1)
    SHUTDOWN_GRACE_SECONDS: int = Field(default=25, ge=0)
    SWEEP_AFTER_SECONDS: float = Field(default=10.0, ge=0)
    RETRY_MAX_SECONDS: float = Field(default=3600.0, gt=0)
    WORKER_CONCURRENCY: int = Field(default=20, ge=1)
    # At most this many events claimed, and this many events' batched handlers run, in one
    # transaction (worker/coalesce.py); 1 turns batching off.
    # 100 rather than 50 since jobs carry many events: 877-896 orders/s against 784-789 on
    # PostgreSQL, in the same hour (docs/operations.md).
    WORKER_BATCH_SIZE: int = Field(default=100, ge=1, le=1000)
    # How often the worker asks Redis for jobs (arq's poll_delay). arq's 0.5 s would add up to half
    # a second to every event; 0.02 s keeps p99 under 250 ms at 200 events/s where 0.05 s gave
    # 255-520 ms, for about 4 % of a core when idle (2 % at 0.05 s). docs/performance.md.
    WORKER_POLL_SECONDS: float = Field(default=0.02, gt=0, le=5)
    LOG_LEVEL: str = "INFO"
    # Reconciliation (worker/reconcile): how often, how far back the first scan looks, and how
    # much each window overlaps the last one (a payment may turn `succeeded` after it was created).
    RECONCILE_INTERVAL_MINUTES: int = Field(default=15, ge=1, le=1440)
    RECONCILE_LOOKBACK_HOURS: float = Field(default=48.0, gt=0)
    RECONCILE_OVERLAP_MINUTES: float = Field(default=60.0, ge=0)
    # Entitlements (worker/entitlements): download links and outbound hooks.
    PUBLIC_URL: str | None = None  # base of download links in hook payloads; else http://localhost:PORT
    DOWNLOAD_SIGNING_KEY: SecretStr | None = None  # else derived from WORKER_API_TOKEN or the webhook key
    DOWNLOAD_TOKEN_TTL_SECONDS: int = Field(default=3600, ge=10)
    HOOKS_TIMEOUT_SECONDS: float = Field(default=10.0, gt=0)
    HOOKS_RETRY_BASE_SECONDS: float = Field(default=5.0, gt=0)
    HOOKS_RETRY_MAX_SECONDS: float = Field(default=3600.0, gt=0)
    HOOKS_GIVE_UP_HOURS: float = Field(default=72.0, gt=0)  # then the delivery is `failed`, replayable
    # Hook deliveries one worker process sends at once, and at most this many to one target (URL or
    # Python hook): an endpoint that hangs holds only its own lane, never the others' deliveries.
    HOOKS_CONCURRENCY: int = Field(default=50, ge=1, le=1000)
    HOOKS_TARGET_CONCURRENCY: int = Field(default=8, ge=1, le=1000)
    # The operator console (worker/console, docs/console.md): off until a password is set.
    CONSOLE_PASSWORD: SecretStr | None = None
    CONSOLE_SESSION_SECONDS: float = Field(default=8 * 3600, gt=0)  # a session's lifetime from sign-in
    # Failed sign-ins from one client address: each answered after a delay; after this many within
    # the window, 429 with Retry-After until the oldest failure leaves the window.
    CONSOLE_SIGNIN_MAX_FAILURES: int = Field(default=5, ge=1)
    CONSOLE_SIGNIN_WINDOW_SECONDS: float = Field(default=900.0, gt=0)
    CONSOLE_SIGNIN_FAIL_DELAY_SECONDS: float = Field(default=1.0, ge=0, le=30)
    # Alerts (worker/alerts): a Slack-compatible incoming webhook, told once per incident.
    ALERT_WEBHOOK_URL: SecretStr | None = None  # holds a token: never logged
    ALERT_REJECTIONS_THRESHOLD: int = Field(default=5, ge=1)  # bad signatures per window that alert
    ALERT_REJECTIONS_WINDOW_SECONDS: int = Field(default=300, ge=1, le=86400)
    ALERT_TIMEOUT_SECONDS: float = Field(default=5.0, gt=0, le=60)
    ALERT_REPEAT_HOURS: float = Field(default=24.0, gt=0)  # an incident's record lasts this long
    ALERT_CHECK_SECONDS: int = Field(default=5, ge=1, le=60)  # how often the worker closes resolved incidents
    # The licence routes (worker/web/licenses.py, docs/licenses.md): requests a minute per client
    # address and per licence key (0: no limit), shared by every web process through Redis; at
    # most LICENSE_CONCURRENCY of them use the database at once in one web process, and one waits
    # at most LICENSE_QUEUE_SECONDS for a turn before a 503, so a flood cannot take the
    # connections the webhook receiver needs (the pool holds 10 + 10).
    LICENSE_RATE_PER_MINUTE: int = Field(default=60, ge=0)
    LICENSE_KEY_RATE_PER_MINUTE: int = Field(default=30, ge=0)
    LICENSE_CONCURRENCY: int = Field(default=4, ge=1, le=100)
    LICENSE_QUEUE_SECONDS: float = Field(default=0.5, ge=0, le=30)
    # Licence requests a second one web process takes on at all (a burst of as many); past it a
    # 503 BUSY at once, before Redis, the body or the database, so a flood spends little of the
    # process's CPU, which the webhook receiver shares (0: no limit).
    LICENSE_PROCESS_RATE_PER_SECOND: int = Field(default=50, ge=0)
    # Addresses or networks (comma-separated) of the reverse proxies whose X-Forwarded-For is
    # believed; empty: the client is the socket peer and X-Forwarded-For is ignored.
    TRUSTED_PROXIES: str = ""

    @field_validator("DODO_PAYMENTS_WEBHOOK_KEY", "HOOKS_SIGNING_KEY")
    @classmethod
    def _valid_secrets(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        for secret in split_secrets(value.get_secret_value()):
            check_whsec(secret)
        return value

    @field_validator("HOOKS_SIGNING_KEY", mode="after")
    @classmethod
    def _one_hooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # Outbound hooks are signed with one key: "whsec_new,whsec_old" would be read as one
        # malformed key and every delivery would fail (see docs/operations.md for rotating it).
        if value is not None and len(split_secrets(value.get_secret_value())) > 1:
            raise ValueError("give one secret (outbound hooks are signed with a single key)")
        return SecretStr(value.get_secret_value().strip()) if value is not None else None

    @field_validator("DODO_PAYMENTS_API_KEY", "WORKER_API_TOKEN", "DOWNLOAD_SIGNING_KEY", "CONSOLE_PASSWORD",
                     mode="after")
    @classmethod
    def _blank_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        # A trailing newline (a secret read from a file) would never match a bearer token.
        return SecretStr(value.get_secret_value().strip())

    @field_validator("ALERT_WEBHOOK_URL", mode="after")
    @classmethod
    def _alert_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        url = value.get_secret_value().strip()
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            host = None
        if parts.scheme not in ("http", "https") or not host:
            raise ValueError("give an http(s) URL, such as Slack's https://hooks.slack.com/services/...")
        return SecretStr(url)

    @field_validator("DODO_PAYMENTS_BASE_URL", "REDIS_URL", "PUBLIC_URL", mode="after")
    @classmethod
    def _blank_str_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("TRUSTED_PROXIES", mode="after")
    @classmethod
    def _valid_proxies(cls, value: str) -> str:
        parse_networks(value)
        return value

    @cached_property
    def trusted_proxies(self) -> list[IPNetwork]:
        return parse_networks(self.TRUSTED_PROXIES)

    @cached_property
    def webhook_secrets(self) -> list[str]:
        if self.DODO_PAYMENTS_WEBHOOK_KEY is None:
            return []
        return split_secrets(self.DODO_PAYMENTS_WEBHOOK_KEY.get_secret_value())

    @cached_property
    def handler_modules(self) -> list[str]:
        """The modules a process imports at start: the built-in entitlement handlers whenever a
        catalog is loaded (naming your own module must not turn the grants off), then
        HANDLER_MODULES in order. `handlers.example` is only imported when named."""
        named = [m.strip() for m in self.HANDLER_MODULES.split(",") if m.strip()]
        builtins = [BUILTIN_HANDLERS] if self.entitlements_path is not None else []
        return [*builtins, *(m for m in named if m not in builtins)]

    @property
    def entitlements_path(self) -> Path | None:
        if self.ENTITLEMENTS_FILE is not None:
            return self.ENTITLEMENTS_FILE
        default = Path("entitlements.toml")
        return default if default.exists() else None


def load_settings(**overrides: object) -> Settings:
    """Build settings, turning pydantic's report into one clear line without echoing values."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            problems.append(f"{name}: {err['msg'].removeprefix('Value error, ')}")
    # Raised outside the `except` block: pydantic's error holds the input (the secret) and must
    # not ride along as __context__ to an error reporter that walks exception chains.
    raise ConfigError("; ".join(problems))
