"""Logging set-up and a logger bound to one event."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s %(message)s"


# Kept at WARNING whatever LOG_LEVEL says: at DEBUG, httpx/httpcore log every request and
# botocore logs signing material and presigned download URLs (bearer links for their lifetime).
QUIET_LOGGERS = ("httpx", "httpcore", "aiosqlite", "asyncio", "botocore", "boto3", "s3transfer", "urllib3")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
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
