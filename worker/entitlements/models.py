"""SQL tables of entitlements: grants, their metadata, pending revocations, the audit trail,
licence activations and the outbox of hook deliveries."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from worker.store.models import Base, UTCDateTime, utcnow


class GrantStatus:
    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"

    ALL = (ACTIVE, SUSPENDED, REVOKED)


class GrantKind:
    LICENSE_KEY = "license_key"
    FILE = "file"
    HOOK = "hook"

    ALL = (LICENSE_KEY, FILE, HOOK)


class GrantSource:
    PAYMENT = "payment"  # one-time purchase, keyed on the payment
    SUBSCRIPTION = "subscription"  # keyed on the subscription, whatever payment renews it
    DODO = "dodo"  # a licence key Dodo issued itself (license_key.created), keyed on its lic_ id


class GrantRow(Base):
    """One thing a customer may use. At most one per (source, source id, product, kind, item, unit)."""

    __tablename__ = "entitlement_grants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    source: Mapped[str] = mapped_column(String(16))
    source_id: Mapped[str] = mapped_column(String(128))
    product_id: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    item: Mapped[str] = mapped_column(String(512), default="")  # file reference or hook URL
    unit: Mapped[int] = mapped_column(Integer, default=0)  # 0..quantity-1 for licence keys
    status: Mapped[str] = mapped_column(String(16))
    status_reason: Mapped[str | None] = mapped_column(String(32))  # refund, dispute, subscription, manual
    status_cause: Mapped[str | None] = mapped_column(String(128))  # the refund, dispute or event behind it
    state_at: Mapped[str | None] = mapped_column(String(64))  # timestamp of the newest subscription event applied
    customer_id: Mapped[str | None] = mapped_column(String(128))
    email: Mapped[str | None] = mapped_column(String(320))
    customer_name: Mapped[str | None] = mapped_column(String(255))
    business_id: Mapped[str | None] = mapped_column(String(128))
    payment_id: Mapped[str | None] = mapped_column(String(128))
    subscription_id: Mapped[str | None] = mapped_column(String(128))
    metadata_json: Mapped[str] = mapped_column(Text, default="{}")
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    license_key: Mapped[str | None] = mapped_column(String(128))
    license_key_hash: Mapped[str | None] = mapped_column(String(64))
    activations_limit: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    dodo_license_key_id: Mapped[str | None] = mapped_column(String(64))
    file_name: Mapped[str | None] = mapped_column(String(255))
    downloads: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("source", "source_id", "product_id", "kind", "item", "unit",
                         name="uq_entitlement_grants_unit"),
        UniqueConstraint("license_key_hash", name="uq_entitlement_grants_license_key_hash"),
        Index("ix_entitlement_grants_customer_id", "customer_id"),
        Index("ix_entitlement_grants_email", "email"),
        Index("ix_entitlement_grants_payment_id", "payment_id"),
        Index("ix_entitlement_grants_subscription_id", "subscription_id"),
    )


class GrantMetadataRow(Base):
    """The checkout metadata of a grant, one row per key, so `metadata.KEY=VALUE` is an indexed lookup."""

    __tablename__ = "entitlement_metadata"

    grant_id: Mapped[str] = mapped_column(ForeignKey("entitlement_grants.id", ondelete="CASCADE"),
                                          primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(512))

    __table_args__ = (Index("ix_entitlement_metadata_key_value", "key", "value"),)


class RevocationRow(Base):
    """A refund or dispute seen for a payment, whether or not its grants exist yet.

    A grant created later (its payment arrived late) reads these and is stored revoked."""

    __tablename__ = "entitlement_revocations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(String(128))
    cause: Mapped[str] = mapped_column(String(16))  # refund, dispute
    cause_id: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(16))  # refund: full, partial; dispute: lost, accepted, won
    event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("payment_id", "cause", "cause_id", name="uq_entitlement_revocations_cause"),
    )


class SubscriptionPaymentRow(Base):
    """A payment of a subscription (`payment.succeeded` names its subscription). Only
    `subscription.renewed` carries a payment id, so this is how a subscription's grants learn
    their first payment, whose refund or lost dispute must reach them, in whichever order the
    payment and the subscription's events arrive."""

    __tablename__ = "entitlement_subscription_payments"

    payment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(String(128))
    paid_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the payment's created_at
    event_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        Index("ix_entitlement_subscription_payments_subscription_id", "subscription_id", "paid_at"),
    )


class AuditRow(Base):
    """Every change of a grant: what, why, which event or person, when."""

    __tablename__ = "entitlement_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("entitlement_grants.id", ondelete="CASCADE"))
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(16))
    to_status: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    event_id: Mapped[str | None] = mapped_column(String(255))
    actor: Mapped[str] = mapped_column(String(255))
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_entitlement_audit_grant_id", "grant_id"),)


class ActivationRow(Base):
    """One machine a licence key is activated on (Dodo's licence key instance, `lki_...`)."""

    __tablename__ = "license_activations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("entitlement_grants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    deactivated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_license_activations_grant_id", "grant_id"),)


class DeliveryStatus:
    PENDING = "pending"
    DELIVERED = "delivered"
    REFUSED = "refused"  # the URL is not allowed (private address); never retried
    FAILED = "failed"  # still failing after HOOKS_GIVE_UP_HOURS; `dodo-worker hooks retry` resends


class DeliveryRow(Base):
    """Outbox: one grant change to tell one target (a hook URL or a Python hook), written in the
    same transaction as the change and delivered afterwards by an arq job."""

    __tablename__ = "entitlement_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # also the webhook-id sent
    grant_id: Mapped[str] = mapped_column(ForeignKey("entitlement_grants.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(512))  # https://... or python:module.function
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_entitlement_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_entitlement_deliveries_grant_id", "grant_id"),
    )
