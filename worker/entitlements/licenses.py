"""Licence key checks a customer's app makes: validate, activate on a machine, deactivate.

Keys are found by their hash (`keys.key_hash`), never by the key itself. Activation is counted
against the grant's `activations_limit` (None: unlimited) while holding the grant row: on
PostgreSQL `SELECT .. FOR UPDATE`, on SQLite the single writer (`BEGIN IMMEDIATE`), so two
machines activating at once cannot both take the last seat.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements import keys
from worker.entitlements.catalog import Catalog
from worker.entitlements.models import ActivationRow, AuditRow, GrantKind, GrantRow, GrantStatus
from worker.store import Database
from worker.store.models import utcnow

ACTOR = "license-api"


class LicenseError(Exception):
    """A refused request; `status` is the HTTP status Dodo's own endpoints use for it."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def usable(grant: GrantRow, now: datetime) -> str | None:
    """Why the key cannot be used now, or None when it can."""
    if grant.status != GrantStatus.ACTIVE:
        return f"license key is {grant.status}"
    if grant.expires_at is not None and grant.expires_at <= now:
        return "license key has expired"
    return None


async def _grant(session: AsyncSession, license_key: str, for_update: bool = False) -> GrantRow:
    query = select(GrantRow).where(GrantRow.license_key_hash == keys.key_hash(license_key),
                                   GrantRow.kind == GrantKind.LICENSE_KEY)
    if for_update and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    grant = (await session.scalars(query)).first()
    if grant is None:
        raise LicenseError(404, "license key not found")
    return grant


async def live_activations(session: AsyncSession, grant_id: str) -> int:
    count = await session.scalar(select(func.count()).select_from(ActivationRow).where(
        ActivationRow.grant_id == grant_id, ActivationRow.deactivated_at.is_(None)))
    return int(count or 0)


def _audit(grant: GrantRow, action: str, text: str, now: datetime) -> AuditRow:
    return AuditRow(grant_id=grant.id, action=action, from_status=grant.status, to_status=grant.status,
                    reason=text, event_id=None, actor=ACTOR, at=now)


def instance_json(grant: GrantRow, activation: ActivationRow, catalog: Catalog) -> dict[str, Any]:
    """A licence key instance as Dodo's `POST /licenses/activate` returns it."""
    product = catalog.product(grant.product_id)
    return {
        "id": activation.id,
        "license_key_id": grant.dodo_license_key_id or grant.id,
        "name": activation.name,
        "business_id": grant.business_id or "",
        "created_at": activation.created_at.isoformat(),
        "customer": {"customer_id": grant.customer_id or "", "name": grant.customer_name or "",
                     "email": grant.email or ""},
        "product": {"product_id": grant.product_id, "name": product.name if product is not None else None},
    }


@dataclass
class Licenses:
    db: Database
    catalog: Catalog

    async def validate(self, license_key: str, instance_id: str | None = None) -> dict[str, Any]:
        """`{"valid": bool, ...}`; an unknown key is simply not valid."""
        now = utcnow()
        async with self.db.sessions() as session:
            try:
                grant = await _grant(session, license_key)
            except LicenseError:
                return {"valid": False}
            activations = await live_activations(session, grant.id)
            valid = usable(grant, now) is None
            if valid and instance_id is not None:
                activation = await session.get(ActivationRow, instance_id)
                valid = (activation is not None and activation.grant_id == grant.id
                         and activation.deactivated_at is None)
        return {
            "valid": valid,
            "status": grant.status,
            "product_id": grant.product_id,
            "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
            "activations_limit": grant.activations_limit,
            "activations": activations,
        }

    async def activate(self, license_key: str, name: str) -> dict[str, Any]:
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            grant = await _grant(session, license_key, for_update=True)
            if (reason := usable(grant, now)) is not None:
                raise LicenseError(403, reason)
            if grant.activations_limit is not None and await live_activations(session, grant.id) >= \
                    grant.activations_limit:
                raise LicenseError(422, f"activation limit reached ({grant.activations_limit})")
            activation = ActivationRow(id="lki_" + secrets.token_urlsafe(18), grant_id=grant.id, name=name,
                                       created_at=now)
            session.add(activation)
            session.add(_audit(grant, "activated", f"instance {activation.id} ({name})", now))
            return instance_json(grant, activation, self.catalog)

    async def deactivate(self, license_key: str, instance_id: str) -> dict[str, Any]:
        """Free a seat. Deactivating an instance twice is not an error (a client may retry)."""
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            grant = await _grant(session, license_key, for_update=True)
            activation = await session.get(ActivationRow, instance_id)
            if activation is None or activation.grant_id != grant.id:
                raise LicenseError(403, "license key instance not found for this license key")
            if activation.deactivated_at is None:
                activation.deactivated_at = now
                session.add(_audit(grant, "deactivated", f"instance {activation.id} ({activation.name})", now))
            return {"status": "deactivated", "id": activation.id,
                    "deactivated_at": activation.deactivated_at.isoformat()}
