"""Console sign-in: the password check, stored sessions, the client's address and the limit on
failed sign-ins.

A session is a random token in an HttpOnly cookie; the database keeps only its SHA-256, the
operator's name, their address, when it began and HMAC(token, CONSOLE_PASSWORD). A session ends
when its lifetime (CONSOLE_SESSION_SECONDS from sign-in) is over, at sign-out, or when the
password changes (the stored tag no longer matches)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from litestar import Request
from sqlalchemy import delete

from worker.console import csrf
from worker.console.models import ConsoleSessionRow
from worker.settings import Settings
from worker.store import Database
from worker.web import clients

COOKIE = "dodo_console"
MAX_NAME = 64


@dataclass(frozen=True)
class Operator:
    """Who is signed in: the name they gave, the address they came from, their CSRF token."""

    name: str
    client: str
    session_id: str
    csrf_token: str


def password_matches(settings: Settings, given: str) -> bool:
    """Constant time whatever the lengths: both sides are hashed to 32 bytes first."""
    if settings.CONSOLE_PASSWORD is None:
        return False
    expected = hashlib.sha256(settings.CONSOLE_PASSWORD.get_secret_value().encode()).digest()
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), expected)


def clean_name(raw: object) -> str | None:
    """The operator's name as given at sign-in (one line, 1-64 printable characters), or None."""
    if not isinstance(raw, str):
        return None
    name = " ".join(raw.split())
    return name if 0 < len(name) <= MAX_NAME and name.isprintable() else None


def client_address(request: Request, settings: Settings) -> str:
    """The client's address: the socket peer, or behind a reverse proxy listed in TRUSTED_PROXIES
    the address it got the request from (X-Forwarded-For from anyone else is ignored, so a client
    cannot choose its address); worker/web/clients.py, as for the licence routes."""
    return (clients.client_address(request, settings.trusted_proxies) or "unknown")[:64]


def is_https(request: Request, settings: Settings) -> bool:
    """Whether the browser talks https to us (the cookie is then `Secure`): the connection's
    scheme, or X-Forwarded-Proto from a proxy in TRUSTED_PROXIES only."""
    return clients.scheme(request, settings.trusted_proxies) == "https"


def _session_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _password_tag(token: str, settings: Settings) -> str:
    password = settings.CONSOLE_PASSWORD.get_secret_value() if settings.CONSOLE_PASSWORD is not None else ""
    return hmac.new(token.encode(), password.encode(), hashlib.sha256).hexdigest()


def _operator(row: ConsoleSessionRow, token: str) -> Operator:
    return Operator(name=row.operator, client=row.client, session_id=row.id, csrf_token=csrf.session_token(token))


async def start_session(db: Database, settings: Settings, name: str, client: str) -> tuple[str, Operator]:
    """A new session for `name`; returns the cookie's token and the operator. Sessions past their
    lifetime are deleted on the way (the table holds only live ones, give or take)."""
    token = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    row = ConsoleSessionRow(id=_session_id(token), operator=name, client=client,
                            password_tag=_password_tag(token, settings), created_at=now)
    oldest = now - timedelta(seconds=settings.CONSOLE_SESSION_SECONDS)
    async with db.sessions() as session, session.begin():
        await session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.created_at < oldest))
        session.add(row)
    return token, _operator(row, token)


async def find_operator(request: Request, settings: Settings, db: Database) -> Operator | None:
    """The operator whose live session the request's cookie names, else None."""
    token = request.cookies.get(COOKIE)
    if not token or len(token) > 128:
        return None
    async with db.sessions() as session:
        row = await session.get(ConsoleSessionRow, _session_id(token))
        if row is None:
            return None
        expired = row.created_at + timedelta(seconds=settings.CONSOLE_SESSION_SECONDS) <= datetime.now(UTC)
        if expired or not hmac.compare_digest(row.password_tag, _password_tag(token, settings)):
            await session.delete(row)
            await session.commit()
            return None
        return _operator(row, token)


async def end_session(db: Database, operator: Operator) -> None:
    async with db.sessions() as session, session.begin():
        await session.execute(delete(ConsoleSessionRow).where(ConsoleSessionRow.id == operator.session_id))


@dataclass
class SignInLimiter:
    """Failed sign-ins per client address within a sliding window; after `max_failures`, refuse
    until the oldest failure leaves the window. Per `web` process (memory), which bounds a guesser
    to max_failures x processes per window: plenty against a password worth the name."""

    max_failures: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, client: str) -> int | None:
        """Seconds until `client` may try again, or None when it may now."""
        now = self.clock()
        failures = self._failures.get(client)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[client]
            return None
        if len(failures) < self.max_failures:
            return None
        return max(1, int(failures[0] + self.window - now) + 1)

    def failed(self, client: str) -> None:
        while len(self._failures) >= 10_000:  # a flood of addresses must not grow memory for ever
            del self._failures[next(iter(self._failures))]
        self._failures.setdefault(client, deque()).append(self.clock())

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)
