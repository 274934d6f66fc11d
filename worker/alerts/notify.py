"""The Alerter of a process (in `runtime.resources["alerts"]`) and the triggers that feed it.

Messages carry ids, types, counts, handler names and an error's last line, escaped for Slack's
mrkdwn and trimmed; never a body, a secret or a licence key. The URL itself holds a token: it is
never logged (only its host is). A failing alert endpoint is logged once per process until a send
succeeds again, and counted in `dodo_alerts_total{result="failed"}`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import httpx

from worker.alerts.incidents import Incidents, RejectionWindow
from worker.runtime import Runtime
from worker.windows import rejected_per_hour

if TYPE_CHECKING:
    from worker.entitlements.delivery import Claimed

log = logging.getLogger("dodo_worker.alerts")

RESOURCE = "alerts"
MAX_PENDING = 1000  # background tasks; beyond, occurrences are dropped (the incident is open anyway)
T = TypeVar("T")


def clean(value: object, limit: int = 200) -> str:
    """One line of at most `limit` characters, safe inside a Slack mrkdwn code span."""
    text = " ".join(str(value).split())
    text = text if text.isprintable() else text.encode("unicode_escape").decode("ascii")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("`", "'")


class Alerter:
    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.url = settings.ALERT_WEBHOOK_URL.get_secret_value() if settings.ALERT_WEBHOOK_URL else None
        self.incidents = Incidents(runtime.redis, settings.QUEUE_NAME, int(settings.ALERT_REPEAT_HOURS * 3600))
        self.rejections = RejectionWindow(runtime.redis, settings.QUEUE_NAME, settings.ALERT_REJECTIONS_WINDOW_SECONDS)
        self.rejected_per_hour = rejected_per_hour(runtime.redis, settings.QUEUE_NAME)
        self.tasks: set[asyncio.Task[Any]] = set()
        self._client: httpx.AsyncClient | None = None
        self._failing = False
        self._refused = 0  # since the last addition to Redis, any reason
        self._bad_signatures = 0
        self._refusals: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.url is not None

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run `work` in the background; it never raises into anyone."""
        if len(self.tasks) >= MAX_PENDING:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(self._guarded(work))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _guarded(self, work: Awaitable[Any]) -> None:
        try:
            await work
        except Exception as exc:  # Redis away, a bug: an alert must not take anything down
            log.warning("alert skipped: %s", type(exc).__name__)

    async def raise_once(self, kind: str, subject: str, text: Callable[[], str]) -> None:
        if await self.incidents.open(kind, subject):
            log.warning("alert: incident %s opened", kind)
            await self.send(text())

    async def send(self, text: str) -> None:
        if self.url is None:
            return
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=self.runtime.settings.ALERT_TIMEOUT_SECONDS,
                                             follow_redirects=False)
        environment = self.runtime.settings.DODO_PAYMENTS_ENVIRONMENT
        try:
            response = await self._client.post(self.url, json={"text": f"*dodo-worker* ({environment}): {text}"})
            problem = None if response.is_success else f"HTTP {response.status_code}"
        except httpx.HTTPError as exc:
            problem = type(exc).__name__
        self.runtime.metrics.inc("dodo_alerts_total", result="failed" if problem else "sent")
        if problem is None:
            self._failing = False
        elif not self._failing:
            self._failing = True
            log.warning("alert not delivered to %s: %s (further failures are only counted in "
                        "dodo_alerts_total{result=\"failed\"})", urlsplit(self.url).hostname, problem)

    def refused(self, bad_signature: bool) -> None:
        """A refused webhook: counted here, added to Redis by one task at a time (a flood of junk
        costs one round trip at a time): to the hour's count (the console's chart) always, to
        the signature alert's window when alerts are on."""
        self._refused += 1
        self._bad_signatures += bad_signature and self.enabled
        if self._refusals is None or self._refusals.done():
            self._refusals = asyncio.get_running_loop().create_task(self._guarded(self._count_refusals()))

    async def _count_refusals(self) -> None:
        settings = self.runtime.settings
        while self._refused:
            count, signatures, self._refused, self._bad_signatures = self._refused, self._bad_signatures, 0, 0
            await self.rejected_per_hour.add(count)
            if not signatures:
                continue
            rate = await self.rejections.add(signatures)
            if rate >= settings.ALERT_REJECTIONS_THRESHOLD:
                await self.raise_once("signatures", "", partial(_signatures_text, settings, rate))

    async def drain(self) -> None:
        """Wait for the background work (tests; closing)."""
        while self.tasks or (self._refusals is not None and not self._refusals.done()):
            await asyncio.gather(*self.tasks, *([self._refusals] if self._refusals else []),
                                 return_exceptions=True)

    async def aclose(self) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drain(), 2.0)
        for task in list(self.tasks):
            task.cancel()
        if self._client is not None:
            await self._client.aclose()


def alerter(runtime: Runtime) -> Alerter:
    found = runtime.resources.get(RESOURCE)
    if not isinstance(found, Alerter):
        found = runtime.resources[RESOURCE] = Alerter(runtime)
    return found


def attach(runtime: Runtime) -> None:
    """At worker start: the process's Alerter, and one line when alerts are off."""
    if not alerter(runtime).enabled:
        log.info("alerts off: ALERT_WEBHOOK_URL is not set")


def _signatures_text(settings: Any, rate: float) -> str:
    minutes = settings.ALERT_REJECTIONS_WINDOW_SECONDS / 60
    return (f"{round(rate)} webhook(s) refused for a bad signature in the last {minutes:g} min "
            f"(threshold {settings.ALERT_REJECTIONS_THRESHOLD}). Most likely the endpoint's secret was rotated "
            "in Dodo's dashboard: put the new secret in DODO_PAYMENTS_WEBHOOK_KEY, next to the old one "
            "(`whsec_new whsec_old`), and restart `web`. Dodo retries what was refused.")


# triggers -------------------------------------------------------------------------------------

def event_dead(runtime: Runtime, event_id: str, event_type: str, handlers: list[str],
               errors: dict[str, str]) -> None:
    """An event went dead: one incident per handler out of attempts. An event dead again only for
    a handler that was dead before (`handlers` empty) was told when that handler died."""
    alerts = alerter(runtime)
    if not alerts.enabled:
        return
    for handler in handlers:
        error = errors.get(handler, "").strip().splitlines()

        def text(handler: str = handler, last: str = error[-1] if error else "") -> str:
            why = f": `{clean(last)}`" if last else ""
            return (f"events are going dead in handler `{clean(handler)}`. First: `{clean(event_id)}` "
                    f"(`{clean(event_type)}`){why}. Fix the cause, then run `dodo-worker events replay --dead`. "
                    "No further message until no dead event of it is left.")

        alerts.spawn(alerts.raise_once("dead", handler, text))


def hook_outcome(runtime: Runtime, item: Claimed, status: str, detail: str) -> None:
    """A delivery ended: `failed` (given up) opens its target's incident, `delivered` closes it."""
    alerts = alerter(runtime)
    if not alerts.enabled or status not in ("failed", "delivered"):
        return
    if status == "delivered":
        alerts.spawn(alerts.incidents.close(f"hook:{_digest(item.target)}"))
        return
    from integrations.hooks import redact

    where = item.target if item.target.startswith("python:") else redact(item.target)

    def text() -> str:
        return (f"hook deliveries to `{clean(where)}` are giving up: `{clean(item.id)}` "
                f"(`{clean(item.event_type)}`, grant `{clean(item.grant_id)}`) failed after {item.attempts} "
                f"attempt(s): `{clean(detail)}`. Fix the endpoint, then run `dodo-worker hooks retry --failed`.")

    alerts.spawn(alerts.raise_once("hook", item.target, text))


def _digest(subject: str) -> str:
    from worker.alerts.incidents import incident_id

    return incident_id("hook", subject).split(":", 1)[1]


async def scan_watched(runtime: Runtime, scan: Awaitable[T]) -> T:
    """Await a scheduled reconciliation scan and alert on what it found: repairs, or a failure.
    A scan that repairs nothing closes both incidents."""
    alerts = alerter(runtime)
    try:
        report = await scan
    except Exception as exc:
        if alerts.enabled:
            from integrations.dodo import DodoAPIError
            from worker.reconcile.lock import LockLost

            reason = str(exc) if isinstance(exc, DodoAPIError | LockLost) else type(exc).__name__
            alerts.spawn(alerts.raise_once("reconcile-failed", "", lambda: (
                f"reconciliation failed: `{clean(reason)}`. The next scan covers the window again; "
                "if this goes on, check DODO_PAYMENTS_API_KEY and `dodo-worker reconcile --dry-run`.")))
        raise
    if alerts.enabled:
        alerts.spawn(_scan_done(alerts, report))
    return report


async def _scan_done(alerts: Alerter, report: Any) -> None:
    await alerts.incidents.close("reconcile-failed")
    repaired = list(getattr(report, "repaired", []))
    if not repaired:
        await alerts.incidents.close("reconcile-repaired")
        return
    kinds = sorted({r.kind for r in repaired})
    await alerts.raise_once("reconcile-repaired", "", lambda: (
        f"reconciliation repaired {len(repaired)} object(s) ({', '.join(clean(k) for k in kinds)}) whose "
        f"webhook never arrived, e.g. `{clean(repaired[0].id)}`. Check the webhook endpoint in Dodo's dashboard "
        "points at this receiver. No further message until a scan repairs nothing."))


def webhook_refused(runtime: Runtime, reason: str) -> None:
    """The receiver refused a webhook: counted per hour, and bad signatures towards the spike alert."""
    alerter(runtime).refused(reason == "signature")
