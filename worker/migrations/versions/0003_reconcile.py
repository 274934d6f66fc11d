"""reconcile tables

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_state",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("high_water", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_reconcile_state"),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime),
        sa.Column("window_since", UTCDateTime),
        sa.Column("window_until", UTCDateTime),
        sa.Column("metadata_filter", sa.Text),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("scanned", sa.Integer, nullable=False),
        sa.Column("repaired", sa.Integer, nullable=False),
        sa.Column("dead", sa.Integer, nullable=False),
        sa.Column("api_calls", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("summary", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_reconcile_runs"),
    )
    op.create_index("ix_reconcile_runs_started_at", "reconcile_runs", ["started_at"])


def downgrade() -> None:
    op.drop_table("reconcile_runs")
    op.drop_table("reconcile_state")
