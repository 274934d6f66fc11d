"""A grant as the read API, the CLI and hook payloads show it (the shape the README documents)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from worker.entitlements import tokens
from worker.entitlements.models import ActivationRow, AuditRow, GrantKind, GrantRow, GrantStatus
from worker.settings import Settings


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def grant_json(grant: GrantRow, settings: Settings, base_url: str | None = None,
               activations: int = 0) -> dict[str, Any]:
    """The grant as JSON; `activations` is the count of its live activations (see activation_counts)."""
    try:
        metadata = json.loads(grant.metadata_json or "{}")
    except ValueError:
        metadata = {}
    data: dict[str, Any] = {
        "id": grant.id,
        "kind": grant.kind,
        "status": grant.status,
        "status_reason": grant.status_reason,
        "product_id": grant.product_id,
        "customer_id": grant.customer_id,
        "email": grant.email,
        "payment_id": grant.payment_id,
        "subscription_id": grant.subscription_id,
        "source": grant.source,
        "metadata": metadata,
        "created_at": _iso(grant.created_at),
        "updated_at": _iso(grant.updated_at),
    }
    if grant.kind == GrantKind.LICENSE_KEY:
        data["license_key"] = {
            "key": grant.license_key,
            "activations_limit": grant.activations_limit,
            "activations": activations,
            "expires_at": _iso(grant.expires_at),
        }
    elif grant.kind == GrantKind.FILE:
        link = None
        if grant.status == GrantStatus.ACTIVE:
            link = tokens.download_url(settings, grant.id, base_url)
        data["file"] = {"name": grant.file_name, "download_url": link}
    elif grant.kind == GrantKind.HOOK:
        data["hook"] = {"url": grant.item}
    return data


async def activation_counts(session: AsyncSession, grant_ids: Iterable[str]) -> dict[str, int]:
    ids = list(grant_ids)
    if not ids:
        return {}
    rows = await session.execute(
        select(ActivationRow.grant_id, func.count())
        .where(ActivationRow.grant_id.in_(ids), ActivationRow.deactivated_at.is_(None))
        .group_by(ActivationRow.grant_id)
    )
    return {grant_id: int(count) for grant_id, count in rows.all()}


async def grants_json(session: AsyncSession, grants: list[GrantRow], settings: Settings,
                      base_url: str | None = None) -> list[dict[str, Any]]:
    counts = await activation_counts(session, [g.id for g in grants if g.kind == GrantKind.LICENSE_KEY])
    return [grant_json(g, settings, base_url, counts.get(g.id, 0)) for g in grants]


_AUDIT_FIELDS = ("action", "from_status", "to_status", "reason", "event_id", "actor")


def audit_json(row: AuditRow) -> dict[str, Any]:
    return {**{name: getattr(row, name) for name in _AUDIT_FIELDS}, "at": _iso(row.at)}
