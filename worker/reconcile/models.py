"""SQL tables of reconciliation: the high-water mark of scheduled scans and each run's summary."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models import Base, UTCDateTime, utcnow


class ReconcileStateRow(Base):
    """Where the next scan's window starts: everything created before `high_water` was scanned
    (less the overlap each window keeps with the last one)."""

    __tablename__ = "reconcile_state"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    high_water: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ReconcileRunRow(Base):
    """One scan: its window, what it read and repaired, how it ended: `running`, `ok`, `failed`
    (the API could not be read), `interrupted` (the worker stopped), `skipped` (another scan held
    the lock). Dry runs are not recorded."""

    __tablename__ = "reconcile_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    trigger: Mapped[str] = mapped_column(String(16))  # cron or cli
    status: Mapped[str] = mapped_column(String(16))  # running, ok, failed, interrupted, skipped
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    window_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    metadata_filter: Mapped[str | None] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    scanned: Mapped[int] = mapped_column(Integer, default=0)
    repaired: Mapped[int] = mapped_column(Integer, default=0)
    dead: Mapped[int] = mapped_column(Integer, default=0)
    api_calls: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    summary: Mapped[str | None] = mapped_column(Text)  # JSON: counts per kind, repaired items

    __table_args__ = (Index("ix_reconcile_runs_started_at", "started_at"),)
