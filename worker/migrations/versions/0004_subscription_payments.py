"""subscription payments: link a subscription's grants to its first payment

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "entitlement_subscription_payments",
        sa.Column("payment_id", sa.String(128), nullable=False),
        sa.Column("subscription_id", sa.String(128), nullable=False),
        sa.Column("paid_at", UTCDateTime),
        sa.Column("event_id", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name="pk_entitlement_subscription_payments"),
    )
    op.create_index("ix_entitlement_subscription_payments_subscription_id", "entitlement_subscription_payments",
                    ["subscription_id", "paid_at"])


def downgrade() -> None:
    op.drop_index("ix_entitlement_subscription_payments_subscription_id", "entitlement_subscription_payments")
    op.drop_table("entitlement_subscription_payments")
