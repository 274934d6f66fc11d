"""Persistence: tables, engine, migrations and the queries the framework runs."""

from worker.store.database import Database
from worker.store.models import EventRow, EventSource, EventStatus, HandlerRunRow, RunStatus

__all__ = ["Database", "EventRow", "EventSource", "EventStatus", "HandlerRunRow", "RunStatus"]
