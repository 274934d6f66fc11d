"""Logging set-up and a logger bound to one event."""

from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s %(message)s"


# Kept at WARNING whatever LOG_LEVEL says: at DEBUG, httpx/httpcore log every request and
# botocore logs signing material and presigned download URLs (bearer links for their lifetime).
QUIET_LOGGERS = ("httpx", "httpcore", "aiosqlite", "asyncio", "botocore", "boto3", "s3transfer", "urllib3")


# Characters that could end a log line or drive a terminal: C0 and C1 controls (but tab), DEL and
# the Unicode line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def escape_controls(text: str) -> str:
    """`text` with control characters written as escapes (`\\n`, `\\x1b`, ...)."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class EscapingFormatter(logging.Formatter):
    """One record, one line: the formatted message has its control characters escaped, so a
    newline in a signed payload's field (a payment id) cannot write a forged line. A traceback
    stays multi-line, but each of its lines is indented (and escaped): only a record's first
    line starts at column 0."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_controls(super().formatMessage(record))

    def formatException(self, ei: Any) -> str:
        return _indented(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return _indented(super().formatStack(stack_info))


def _indented(text: str) -> str:
    return "\n".join("  " + escape_controls(line) for line in text.splitlines())


def configure_logging(level: str = "INFO") -> None:
    """The project's one log handler (stderr), with `EscapingFormatter`; uvicorn's loggers use
    it too (`log_config=None` in worker/cli/serve.py)."""
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(EscapingFormatter(FORMAT))
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


# arq's lines for a job starting and finishing; args: (seconds, ref, ...), ref being a cron job's name.
ARQ_JOB_LINES = frozenset({"%6.2fs → %s(%s)%s", "%6.2fs ← %s ● %s"})
# What arq says as the supervisor stops a worker (it names SIGUSR1, which nobody sent); we log our own.
ARQ_STOP_LINES = frozenset({
    "shutdown on %s ◆ %d jobs complete ◆ %d failed ◆ %d retries ◆ %d ongoing to cancel",
})


class QuietCronJobs(logging.Filter):
    """arq logs two INFO lines per job; the hook-delivery cron runs every second and the sweeper
    every ten, which made them most of the log. Their start and finish lines (and arq's stop line)
    go to DEBUG; their failures and retries, and every line of the other jobs, stay as they are."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or not self._routine(record):
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def _routine(self, record: logging.LogRecord) -> bool:
        if record.msg in ARQ_STOP_LINES:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        return record.msg in ARQ_JOB_LINES and len(args) > 1 and args[1] in self.names


_quiet_cron_jobs = QuietCronJobs()


def quiet_cron_jobs(names: list[str]) -> None:
    """Log these cron jobs' routine start and finish lines at DEBUG (see QuietCronJobs)."""
    _quiet_cron_jobs.names.update(names)
    arq_logger = logging.getLogger("arq.worker")
    if _quiet_cron_jobs not in arq_logger.filters:
        arq_logger.addFilter(_quiet_cron_jobs)


class EventLogger(logging.LoggerAdapter):
    """Prefixes every line with the event id (and handler) so one event's story can be grepped."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        prefix = f"[{extra.get('event_id')}]"
        if extra.get("handler"):
            prefix += f" [{extra['handler']}]"
        kwargs.setdefault("extra", {}).update(extra)
        return f"{prefix} {msg}", kwargs


def event_logger(event_id: str, handler: str | None = None) -> EventLogger:
    return EventLogger(logging.getLogger("dodo_worker.events"), {"event_id": event_id, "handler": handler})
