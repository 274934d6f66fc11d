"""handler attempts: every attempt of every handler, kept across retries and replays

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "handler_attempts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "event_id",
            sa.String(255),
            sa.ForeignKey("events.id", ondelete="CASCADE", name="fk_handler_attempts_event_id_events"),
            nullable=False,
        ),
        sa.Column("handler", sa.String(255), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTCDateTime),
        sa.Column("duration_ms", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("note", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_handler_attempts"),
    )
    op.create_index("ix_handler_attempts_event_id", "handler_attempts", ["event_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_handler_attempts_event_id", "handler_attempts")
    op.drop_table("handler_attempts")
