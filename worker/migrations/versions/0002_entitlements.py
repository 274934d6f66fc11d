"""entitlements tables

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from worker.store.models import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _grant_fk(name: str) -> sa.ForeignKey:
    return sa.ForeignKey("entitlement_grants.id", ondelete="CASCADE", name=name)


def upgrade() -> None:
    op.create_table(
        "entitlement_grants",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("source_id", sa.String(128), nullable=False),
        sa.Column("product_id", sa.String(128), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("item", sa.String(512), nullable=False),
        sa.Column("unit", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_reason", sa.String(32)),
        sa.Column("status_cause", sa.String(128)),
        sa.Column("state_at", sa.String(64)),
        sa.Column("customer_id", sa.String(128)),
        sa.Column("email", sa.String(320)),
        sa.Column("customer_name", sa.String(255)),
        sa.Column("business_id", sa.String(128)),
        sa.Column("payment_id", sa.String(128)),
        sa.Column("subscription_id", sa.String(128)),
        sa.Column("metadata_json", sa.Text, nullable=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("license_key", sa.String(128)),
        sa.Column("license_key_hash", sa.String(64)),
        sa.Column("activations_limit", sa.Integer),
        sa.Column("expires_at", UTCDateTime),
        sa.Column("dodo_license_key_id", sa.String(64)),
        sa.Column("file_name", sa.String(255)),
        sa.Column("downloads", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entitlement_grants"),
        sa.UniqueConstraint("source", "source_id", "product_id", "kind", "item", "unit",
                            name="uq_entitlement_grants_unit"),
        sa.UniqueConstraint("license_key_hash", name="uq_entitlement_grants_license_key_hash"),
    )
    for column in ("customer_id", "email", "payment_id", "subscription_id"):
        op.create_index(f"ix_entitlement_grants_{column}", "entitlement_grants", [column])

    op.create_table(
        "entitlement_metadata",
        sa.Column("grant_id", sa.String(40), _grant_fk("fk_entitlement_metadata_grant_id_entitlement_grants"),
                  nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.String(512), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", "key", name="pk_entitlement_metadata"),
    )
    op.create_index("ix_entitlement_metadata_key_value", "entitlement_metadata", ["key", "value"])

    op.create_table(
        "entitlement_revocations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("payment_id", sa.String(128), nullable=False),
        sa.Column("cause", sa.String(16), nullable=False),
        sa.Column("cause_id", sa.String(128), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("event_id", sa.String(255)),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entitlement_revocations"),
        sa.UniqueConstraint("payment_id", "cause", "cause_id", name="uq_entitlement_revocations_cause"),
    )

    op.create_table(
        "entitlement_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("grant_id", sa.String(40), _grant_fk("fk_entitlement_audit_grant_id_entitlement_grants"),
                  nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_status", sa.String(16)),
        sa.Column("to_status", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("event_id", sa.String(255)),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_entitlement_audit"),
    )
    op.create_index("ix_entitlement_audit_grant_id", "entitlement_audit", ["grant_id"])

    op.create_table(
        "license_activations",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("grant_id", sa.String(40), _grant_fk("fk_license_activations_grant_id_entitlement_grants"),
                  nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("deactivated_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_license_activations"),
    )
    op.create_index("ix_license_activations_grant_id", "license_activations", ["grant_id"])

    op.create_table(
        "entitlement_deliveries",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("grant_id", sa.String(40), _grant_fk("fk_entitlement_deliveries_grant_id_entitlement_grants"),
                  nullable=False),
        sa.Column("target", sa.String(512), nullable=False),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("next_attempt_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("delivered_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_entitlement_deliveries"),
    )
    op.create_index("ix_entitlement_deliveries_status_next", "entitlement_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_entitlement_deliveries_grant_id", "entitlement_deliveries", ["grant_id"])


def downgrade() -> None:
    for table in ("entitlement_deliveries", "license_activations", "entitlement_audit",
                  "entitlement_revocations", "entitlement_metadata", "entitlement_grants"):
        op.drop_table(table)
