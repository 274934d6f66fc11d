"""Logging set-up and a logger bound to one event."""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

FORMAT = "%(asctime)s %(levelname)-7s %(name)s %(message)s"


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format=FORMAT)
    for noisy in ("httpx", "httpcore", "aiosqlite", "asyncio"):
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
