"""inbox of events and handler runs

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("type", sa.String(128), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("object_id", sa.String(128)),
        sa.Column("business_id", sa.String(128)),
        sa.Column("occurred_at", sa.String(64)),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("received_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("processed_at", UTCDateTime),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("last_error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_status_received_at", "events", ["status", "received_at"])
    op.create_index("ix_events_type_object_id", "events", ["type", "object_id"])
    op.create_index("ix_events_received_at", "events", ["received_at"])
    op.create_table(
        "handler_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            sa.String(255),
            sa.ForeignKey("events.id", ondelete="CASCADE", name="fk_handler_runs_event_id_events"),
            nullable=False,
        ),
        sa.Column("handler", sa.String(255), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("duration_ms", sa.Float),
        sa.Column("started_at", UTCDateTime),
        sa.Column("finished_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_handler_runs"),
        sa.UniqueConstraint("event_id", "handler", name="uq_handler_runs_event_handler"),
    )


def downgrade() -> None:
    op.drop_table("handler_runs")
    op.drop_table("events")
