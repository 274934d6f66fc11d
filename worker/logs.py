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
