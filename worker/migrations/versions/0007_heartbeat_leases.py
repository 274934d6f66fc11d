"""heartbeat leases: the claim's token (fencing) and how many leases in a row were lost

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("lease_token", sa.String(32)))
        batch.add_column(sa.Column("lost_leases", sa.Integer, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("lost_leases")
        batch.drop_column("lease_token")
