"""Grant state changes. Each one writes an AuditRow (what, from/to, why, which event or person)
and the hook outbox rows, in the caller's transaction.

    grants = Grants(session, settings, catalog, Actor.for_event(event.id))
    row = await grants.create(GrantKey(...), owner, ...)   # None when it already exists
    await grants.revoke(row, reason="refund", cause="ref_123", text="refund ref_123 (full)")
"""

from __future__ import annotations

import getpass
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from worker.entitlements import hooks, keys, outbox
from worker.entitlements.catalog import Catalog, LicenseKeySpec
from worker.entitlements.models import AuditRow, GrantKind, GrantMetadataRow, GrantRow, GrantStatus
from worker.entitlements.sql import TRANSACTION_INFO, insert_ignore_many, insert_later, write_pending
from worker.settings import Settings
from worker.store.models import utcnow

GRANTED, REVOKED = "entitlement.granted", "entitlement.revoked"
INSERTED_AHEAD = "dodo_worker.grants_inserted_ahead"  # session.info: grant id -> its row, or None
TRANSACTION_INFO.append(INSERTED_AHEAD)
SUSPENDED, RESUMED, UPDATED = "entitlement.suspended", "entitlement.resumed", "entitlement.updated"


@dataclass(frozen=True)
class Actor:
    """Who changes a grant: `event:<id>` (a handler) or `cli:<user>` (support).

    `in_worker`: the change is made by a handler in the worker, whose settings, catalog and
    Python hooks are the ones that deliver, so it writes each target's delivery itself. Any
    other change (a support shell may lack HOOKS_SIGNING_KEY, the catalog or HANDLER_MODULES)
    leaves one outbox row for the worker to expand (see `outbox.FAN_OUT`)."""

    name: str
    event_id: str | None = None
    in_worker: bool = False

    @classmethod
    def for_event(cls, event_id: str) -> Actor:
        return cls(f"event:{event_id}", event_id, in_worker=True)

    @classmethod
    def cli(cls, user: str | None = None) -> Actor:
        return cls(f"cli:{user or _user()}")


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers)
        return "unknown"


@dataclass(frozen=True)
class GrantKey:
    """The domain key of a grant: at most one grant per value (a unique constraint says so)."""

    source: str
    source_id: str
    product_id: str
    kind: str
    item: str = ""
    unit: int = 0

    @property
    def grant_id(self) -> str:
        raw = "|".join([self.source, self.source_id, self.product_id, self.kind, self.item, str(self.unit)])
        return "grt_" + hashlib.sha256(raw.encode()).hexdigest()[:28]


@dataclass
class Owner:
    """Who the grant is for, copied onto each grant (metadata also one row per key, for lookups)."""

    customer_id: str | None = None
    email: str | None = None
    customer_name: str | None = None
    business_id: str | None = None
    payment_id: str | None = None
    subscription_id: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewGrant:
    """A grant to create: its key and what differs per kind (see `Grants.create`)."""

    key: GrantKey
    license: LicenseKeySpec | None = None  # how to generate the key, when none is given
    license_key: str | None = None
    activations_limit: int | None = None
    expires_at: datetime | None = None
    dodo_license_key_id: str | None = None
    file_name: str | None = None
    quantity: int = 1


@dataclass
class Initial:
    """A new grant's first state: active, or revoked/suspended when the news came first."""

    status: str = GrantStatus.ACTIVE
    reason: str | None = None  # refund, dispute, subscription, manual
    cause: str | None = None  # the refund, dispute or event behind it
    text: str | None = None  # for the audit trail
    state_at: str | None = None


async def insert_ahead(session: AsyncSession, planned: list[tuple[list[NewGrant], Owner]]) -> None:
    """Insert active grants that handlers later in this transaction will create, all in one
    statement (a batch's paid orders: one INSERT per batch instead of one per order).
    `Grants.insert_many` then takes each planned grant from here, as inserted now or found
    existing, without a statement of its own; the rest of what a new grant writes (audit,
    metadata, hooks) it still writes."""
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for new, owner in planned:
        for grant in new:  # a product twice in a cart plans the same grant twice: the first counts
            if grant.key.grant_id not in rows:
                rows[grant.key.grant_id] = Grants._values(grant, owner, Initial(), now)
    if not rows:
        return
    inserted = await insert_ignore_many(session, GrantRow, list(rows.values()))
    ahead: dict[str, dict[str, Any] | None] = session.info.setdefault(INSERTED_AHEAD, {})
    ahead.update({grant_id: values if grant_id in inserted else None for grant_id, values in rows.items()})


def metadata_value(value: Any) -> str:
    return (value if isinstance(value, str) else json.dumps(value))[:512]


class Grants:
    """Grant changes within one transaction, by one actor."""

    def __init__(self, session: AsyncSession, settings: Settings, catalog: Catalog, actor: Actor) -> None:
        self.session = session
        self.settings = settings
        self.catalog = catalog
        self.actor = actor

    async def create(self, key: GrantKey, owner: Owner, initial: Initial | None = None, *,
                     license: LicenseKeySpec | None = None, license_key: str | None = None,
                     activations_limit: int | None = None, expires_at: datetime | None = None,
                     dodo_license_key_id: str | None = None, file_name: str | None = None,
                     quantity: int = 1) -> GrantRow | None:
        """Insert the grant unless one with this key exists; the new row, or None."""
        new = NewGrant(key, license=license, license_key=license_key, activations_limit=activations_limit,
                       expires_at=expires_at, dodo_license_key_id=dodo_license_key_id, file_name=file_name,
                       quantity=quantity)
        created = await self.create_many([new], owner, initial)
        return created[0] if created else None

    async def create_many(self, new: list[NewGrant], owner: Owner, initial: Initial | None = None) -> list[GrantRow]:
        """Insert, in one statement, the grants whose keys are not taken yet; the new rows, in order."""
        return [grant or self._attach(values) for values, grant in await self._insert(new, owner, initial)]

    async def insert_many(self, new: list[NewGrant], owner: Owner, initial: Initial | None = None) -> list[str]:
        """`create_many` for the worker's hot path: the new grants' ids, with no ORM object built
        unless a hook must hear of the grant (building and adding one was a sixth of the
        worker's CPU per order). A later query in the transaction loads them as usual."""
        return [values["id"] for values, _ in await self._insert(new, owner, initial)]

    async def _insert(self, new: list[NewGrant], owner: Owner,
                      initial: Initial | None) -> list[tuple[dict[str, Any], GrantRow | None]]:
        if not new:
            return []
        initial = initial or Initial()
        now = utcnow()
        ahead: dict[str, dict[str, Any] | None] = self.session.info.get(INSERTED_AHEAD) or {}
        rows: list[dict[str, Any]] = []
        inserted: set[str] = set()
        fresh: list[dict[str, Any]] = []
        for grant in new:
            grant_id = grant.key.grant_id
            if grant_id in ahead:
                if initial.status != GrantStatus.ACTIVE:  # the batch rolls back; each event runs alone
                    raise RuntimeError(f"grant {grant_id} was inserted ahead as active, but starts {initial.status}")
                values = ahead.pop(grant_id)
                if values is not None:  # inserted ahead (None: it existed already)
                    rows.append(values)
                    inserted.add(grant_id)
                continue
            values = self._values(grant, owner, initial, now)
            rows.append(values)
            fresh.append(values)
        if fresh:
            inserted |= await insert_ignore_many(self.session, GrantRow, fresh)
        event_type = GRANTED if initial.status == GrantStatus.ACTIVE else None
        notify = event_type is not None and (not self.actor.in_worker or self.settings.HOOKS_SIGNING_KEY is not None
                                             or bool(hooks.targets_for(event_type)))
        created: list[tuple[dict[str, Any], GrantRow | None]] = []
        for values in rows:
            grant_id = values["id"]
            if grant_id not in inserted:
                continue
            for meta_key, value in owner.metadata.items():
                insert_later(self.session, GrantMetadataRow,
                             {"grant_id": grant_id, "key": str(meta_key)[:64], "value": metadata_value(value)})
            text = initial.text or "granted"
            if notify:
                row = self._attach(values)
                await self._record(row, "granted", None, initial.status, text, event_type)
                created.append((values, row))
            else:  # nothing to deliver: the audit row alone
                insert_later(self.session, AuditRow, self._audit(grant_id, "granted", None, initial.status, text))
                created.append((values, None))
        return created

    @staticmethod
    def _values(new: NewGrant, owner: Owner, initial: Initial, now: datetime) -> dict[str, Any]:
        key = new.key
        values: dict[str, Any] = {
            "id": key.grant_id, "source": key.source, "source_id": key.source_id,
            "product_id": key.product_id, "kind": key.kind, "item": key.item, "unit": key.unit,
            "status": initial.status, "status_reason": initial.reason, "status_cause": initial.cause,
            "state_at": initial.state_at,
            "customer_id": owner.customer_id, "email": owner.email, "customer_name": owner.customer_name,
            "business_id": owner.business_id, "payment_id": owner.payment_id,
            "subscription_id": owner.subscription_id,
            "metadata_json": json.dumps(owner.metadata, sort_keys=True, default=str),
            "quantity": new.quantity, "activations_limit": new.activations_limit, "expires_at": new.expires_at,
            "dodo_license_key_id": new.dodo_license_key_id, "file_name": new.file_name, "downloads": 0,
            "created_at": now, "updated_at": now,
        }
        if key.kind == GrantKind.LICENSE_KEY:
            secret = new.license_key or keys.generate(new.license)
            values["license_key"] = secret
            values["license_key_hash"] = keys.key_hash(secret)
        else:
            values["license_key"] = values["license_key_hash"] = None
        return values

    def _attach(self, values: dict[str, Any]) -> GrantRow:
        """The row just inserted, as a persistent object built from its values (every column set)
        instead of reading it back: one SELECT fewer per grant."""
        grant = GrantRow(**values)
        make_transient_to_detached(grant)
        self.session.add(grant)
        return grant

    async def revoke(self, grant: GrantRow, *, reason: str, cause: str | None, text: str) -> bool:
        return await self._move(grant, GrantStatus.REVOKED, "revoked", reason, cause, text, REVOKED)

    async def suspend(self, grant: GrantRow, *, reason: str, cause: str | None, text: str) -> bool:
        if grant.status != GrantStatus.ACTIVE:
            return False
        return await self._move(grant, GrantStatus.SUSPENDED, "suspended", reason, cause, text, SUSPENDED)

    async def resume(self, grant: GrantRow, *, text: str) -> bool:
        """Suspended -> active."""
        if grant.status != GrantStatus.SUSPENDED:
            return False
        return await self._move(grant, GrantStatus.ACTIVE, "resumed", None, None, text, RESUMED)

    async def restore(self, grant: GrantRow, *, text: str) -> bool:
        """Revoked or suspended -> active (a dispute won, or support by hand)."""
        if grant.status == GrantStatus.ACTIVE:
            return False
        event_type = GRANTED if grant.status == GrantStatus.REVOKED else RESUMED
        return await self._move(grant, GrantStatus.ACTIVE, "restored", None, None, text, event_type)

    async def set_limit(self, grant: GrantRow, limit: int | None, *, text: str) -> bool:
        if grant.activations_limit == limit:
            return False
        before = grant.activations_limit
        grant.activations_limit = limit
        grant.updated_at = utcnow()
        await self._record(grant, "limit_changed", grant.status, grant.status,
                           f"{text}: activations limit {before} -> {limit}", UPDATED)
        return True

    async def change_product(self, grant: GrantRow, product_id: str, *, text: str) -> None:
        """A subscription's plan changed: the same grant (the same key) now belongs to `product_id`."""
        before = grant.product_id
        grant.product_id = product_id
        grant.updated_at = utcnow()
        await self._record(grant, "product_changed", grant.status, grant.status,
                           f"{text}: product {before} -> {product_id}", UPDATED)

    async def reattribute(self, grant: GrantRow, *, reason: str, cause: str | None, text: str) -> None:
        """Keep a revoked grant revoked, under another reason (its old cause went away)."""
        grant.status_reason, grant.status_cause = reason, cause
        grant.updated_at = utcnow()
        await self._record(grant, "still_revoked", grant.status, grant.status, text, None)

    async def _move(self, grant: GrantRow, to: str, action: str, reason: str | None, cause: str | None,
                    text: str, event_type: str) -> bool:
        if grant.status == to:
            return False
        before = grant.status
        grant.status, grant.status_reason, grant.status_cause = to, reason, cause
        grant.updated_at = utcnow()
        await self._record(grant, action, before, to, text, event_type)
        return True

    def _audit(self, grant_id: str, action: str, before: str | None, after: str | None, text: str) -> dict[str, Any]:
        return {"grant_id": grant_id, "action": action, "from_status": before, "to_status": after,
                "reason": text, "event_id": self.actor.event_id, "actor": self.actor.name, "at": utcnow()}

    async def _record(self, grant: GrantRow, action: str, before: str | None, after: str | None,
                      text: str, event_type: str | None) -> None:
        """Write the audit row: with the transaction's other queued rows before it commits, or at
        once (after the rows queued before it, keeping the trail in order) when an outbox row
        needs its id."""
        values = self._audit(grant.id, action, before, after, text)
        targets = self._targets(grant, event_type)
        if not targets or event_type is None:
            insert_later(self.session, AuditRow, values)
            return
        await write_pending(self.session)
        audit = AuditRow(**values)
        self.session.add(audit)
        await self.session.flush()
        await outbox.enqueue(self.session, self.settings, self.catalog, grant, audit, event_type, targets)

    def _targets(self, grant: GrantRow, event_type: str | None) -> list[str]:
        if event_type is None:
            return []
        if not self.actor.in_worker:
            return [outbox.FAN_OUT]
        return outbox.targets(self.settings, self.catalog, grant, event_type)
