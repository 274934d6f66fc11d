"""Licence key checks a customer's app makes: validate, activate on a machine, deactivate.

Keys are found by their hash (`keys.key_hash`), never by the key itself. Two kinds of key:

- Keys this service issued (a catalog `license_key`) are answered from SQL alone. Activation is
  counted against the grant's `activations_limit` (None: unlimited) while holding the grant
  row: on PostgreSQL `SELECT .. FOR UPDATE`, on SQLite the single writer (`BEGIN IMMEDIATE`),
  so two machines activating at once cannot both take the last seat.
- Keys Dodo issued (recorded from `license_key.created`: the grant has a `dodo_license_key_id`)
  are counted by Dodo, so activate, validate and deactivate go to Dodo's public `/licenses/*`
  first (`integrations.dodo.DodoLicenses`) and the local rows follow its answer: one activation
  row per Dodo instance, under Dodo's `lki_` id, deactivated when Dodo deactivates it. Dodo's
  refusal is passed on with its status, code and message. A local refusal (the grant revoked,
  suspended or expired here, by a refund, dispute or subscription event) still wins, without
  asking Dodo; validate is `valid` only when Dodo and the local grant both say so.

When Dodo cannot be reached (connection error, timeout, 429 or 5xx):

- validate answers from the last known local state, saying so (`"source": "local"`,
  `"dodo_unreachable": true`): an app validates on every start, and an outage at Dodo must not
  lock paying customers out. That state is what Dodo last answered plus our own revocations.
- activate and deactivate answer 503 `DODO_UNAVAILABLE`: done here alone they would give or free
  a seat Dodo knows nothing of, so the two counts would drift, and an instance id Dodo never
  issued could never be deactivated there. The app tries again later, as after any failure.

Refusals are `LicenseError(status, code, message)`, codes from Dodo's error-code list
(docs.dodopayments.com/api-reference/error-codes) where it has one.
"""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from dodopayments.types import LicenseActivateResponse
from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from integrations.dodo import DodoLicenses, DodoRefused, DodoUnreachable
from worker.entitlements import keys
from worker.entitlements.catalog import Catalog
from worker.entitlements.models import ActivationRow, AuditRow, GrantKind, GrantRow, GrantStatus
from worker.store import Database, EventRow
from worker.store.models import utcnow

ACTOR = "license-api"
log = logging.getLogger("dodo_worker.licenses")

# Dodo's codes (api-reference/error-codes) and, where Dodo has none, ours.
NOT_FOUND = "NOT_FOUND"  # Dodo's generic 404: the key is unknown
INACTIVE = "INACTIVE_LICENSE_KEY"  # 403: "Key status != ACTIVE" (revoked, suspended, expired)
LIMIT_REACHED = "LICENSE_KEY_LIMIT_REACHED"  # 422: "Activations = limit"
INSTANCE_NOT_FOUND = "LICENSE_KEY_NOT_FOUND"  # 403: "instance not found or does not belong to this key"
INVALID_BODY = "INVALID_REQUEST_BODY"  # 422: "Malformed JSON or schema violation"
DODO_UNAVAILABLE = "DODO_UNAVAILABLE"  # ours, 503: Dodo did not answer an activate or deactivate
# A refusal of Dodo's without a code gets the one its spec's status means on that route.
_DODO_CODES = {("activate", 403): INACTIVE, ("activate", 404): NOT_FOUND, ("activate", 422): LIMIT_REACHED,
               ("deactivate", 403): INSTANCE_NOT_FOUND, ("deactivate", 404): NOT_FOUND,
               ("validate", 422): INVALID_BODY}
# Webhooks whose payload names the customer (`data.customer`): every payment.* and
# subscription.* type, matched by family so a type the SDK adds is read too.
_PAYMENT_EVENTS, _SUBSCRIPTION_EVENTS = "payment.%", "subscription.%"


class LicenseError(Exception):
    """A refused request: the HTTP `status` and `code` Dodo's own endpoints use for it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
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
        raise LicenseError(404, NOT_FOUND, "license key not found")
    return grant


async def live_activations(session: AsyncSession, grant_id: str) -> int:
    count = await session.scalar(select(func.count()).select_from(ActivationRow).where(
        ActivationRow.grant_id == grant_id, ActivationRow.deactivated_at.is_(None)))
    return int(count or 0)


def _audit(grant: GrantRow, action: str, text: str, now: datetime, actor: str = ACTOR) -> AuditRow:
    return AuditRow(grant_id=grant.id, action=action, from_status=grant.status, to_status=grant.status,
                    reason=text, event_id=None, actor=actor, at=now)


def customer_json(grant: GrantRow) -> dict[str, Any]:
    """Dodo's `CustomerLimitedDetails`; null, never "", for what nobody told us."""
    return {"customer_id": grant.customer_id or None, "name": grant.customer_name or None,
            "email": grant.email or None}


def _product_name(catalog: Catalog, product_id: str) -> str | None:
    product = catalog.product(product_id)
    return product.name if product is not None else None


def instance_json(grant: GrantRow, activation: ActivationRow, catalog: Catalog) -> dict[str, Any]:
    """A licence key instance as Dodo's `POST /licenses/activate` returns it."""
    return {
        "id": activation.id,
        "license_key_id": grant.dodo_license_key_id or grant.id,
        "name": activation.name,
        "business_id": grant.business_id or "",
        "created_at": activation.created_at.isoformat(),
        "customer": customer_json(grant),
        "product": {"product_id": grant.product_id, "name": _product_name(catalog, grant.product_id)},
    }


def dodo_instance_json(grant: GrantRow, answer: LicenseActivateResponse, catalog: Catalog) -> dict[str, Any]:
    """Dodo's answer to activate, its customer completed from the grant (which learnt Dodo's)."""
    product_id = answer.product.product_id if answer.product else grant.product_id
    return {
        "id": answer.id,
        "license_key_id": answer.license_key_id,
        "name": answer.name,
        "business_id": answer.business_id,
        "created_at": answer.created_at.isoformat(),
        "customer": customer_json(grant),
        "product": {"product_id": product_id,
                    "name": (answer.product.name if answer.product else None) or _product_name(catalog, product_id)},
    }


async def learn_customer(session: AsyncSession, grant: GrantRow) -> None:
    """Fill the grant's missing customer name and email from what this service knows: another
    grant of the same payment, subscription or customer, else the payment's or subscription's
    own webhook in the inbox. A `license_key.created` payload names only the customer id, and
    may come before the payment it belongs to, so a Dodo key's grant often starts without them."""
    if grant.email and grant.customer_name:
        return
    before = (grant.customer_name, grant.email)
    for name, email in [*await _from_grants(session, grant), *await _from_events(session, grant)]:
        grant.customer_name = grant.customer_name or name
        grant.email = grant.email or email
        if grant.email and grant.customer_name:
            break
    if (grant.customer_name, grant.email) != before:
        grant.updated_at = utcnow()


async def _from_grants(session: AsyncSession, grant: GrantRow) -> list[tuple[str | None, str | None]]:
    same = [column == value for column, value in ((GrantRow.payment_id, grant.payment_id),
                                                  (GrantRow.subscription_id, grant.subscription_id),
                                                  (GrantRow.customer_id, grant.customer_id)) if value]
    if not same:
        return []
    rows = await session.execute(
        select(GrantRow.customer_name, GrantRow.email)
        .where(GrantRow.id != grant.id, or_(*same),
               or_(GrantRow.email.is_not(None), GrantRow.customer_name.is_not(None)))
        .order_by(GrantRow.created_at).limit(5))
    return [(name, email) for name, email in rows]


async def _from_events(session: AsyncSession, grant: GrantRow) -> list[tuple[str | None, str | None]]:
    about = [and_(EventRow.type.like(family), EventRow.object_id == object_id)
             for family, object_id in ((_PAYMENT_EVENTS, grant.payment_id),
                                      (_SUBSCRIPTION_EVENTS, grant.subscription_id)) if object_id]
    if not about:
        return []
    bodies = await session.scalars(select(EventRow.body).where(or_(*about))
                                   .order_by(EventRow.received_at.desc()).limit(5))
    found = []
    for body in bodies:
        try:
            customer = (json.loads(body).get("data") or {}).get("customer")
        except (ValueError, AttributeError):
            continue
        if isinstance(customer, dict) and customer.get("customer_id") in (None, grant.customer_id):
            name, email = customer.get("name"), customer.get("email")
            found.append((name if isinstance(name, str) else None, email if isinstance(email, str) else None))
    return found


def _passed_on(action: str, exc: DodoRefused) -> LicenseError:
    code = exc.code or _DODO_CODES.get((action, exc.status), "DODO_REFUSED")
    return LicenseError(exc.status, code, exc.message)


def _unreachable(action: str, exc: DodoUnreachable) -> LicenseError:
    log.warning("Dodo licence %s: %s; answering 503", action, exc.reason)
    return LicenseError(503, DODO_UNAVAILABLE,
                        f"Dodo Payments could not be reached to {action} this Dodo-issued key; try again later")


@dataclass
class Licenses:
    db: Database
    catalog: Catalog
    dodo: DodoLicenses | None = None  # None: Dodo-issued keys too are answered from SQL alone
    actor: str = ACTOR  # who the audit trail names (the operator console names its operator)

    def _at_dodo(self, grant: GrantRow) -> bool:
        return self.dodo is not None and bool(grant.dodo_license_key_id) and bool(grant.license_key)

    async def validate(self, license_key: str, instance_id: str | None = None) -> dict[str, Any]:
        """`{"valid": bool, ..., "source": "dodo" | "local"}`; an unknown key is simply not valid."""
        async with self.db.sessions() as session:
            try:
                grant = await _grant(session, license_key)
            except LicenseError:
                return {"valid": False, "source": "local"}
            local = await _local_state(session, grant, instance_id)
        if not self._at_dodo(grant):
            return {**local, "source": "local"}
        assert self.dodo is not None
        try:
            valid_at_dodo = await self.dodo.validate(str(grant.license_key), instance_id)
        except DodoUnreachable as exc:
            log.warning("Dodo licence validate: %s; answering from the last known local state", exc.reason)
            return {**local, "source": "local", "dodo_unreachable": True}
        except DodoRefused as exc:
            if exc.status != 404:  # a key Dodo does not know is not valid, as any unknown key
                raise _passed_on("validate", exc) from None
            valid_at_dodo = False
        return {**local, "valid": valid_at_dodo and usable(grant, utcnow()) is None, "source": "dodo"}

    async def activate(self, license_key: str, name: str) -> dict[str, Any]:
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            grant = await _grant(session, license_key, for_update=True)
            if (reason := usable(grant, now)) is not None:
                raise LicenseError(403, INACTIVE, reason)
            if not self._at_dodo(grant):
                return await self._activate_here(session, grant, name, now)
            grant_id, key = grant.id, str(grant.license_key)
        # Dodo counts (and limits) its keys' activations: no transaction is held while it answers.
        return await self._activate_at_dodo(grant_id, key, name)

    async def _activate_here(self, session: AsyncSession, grant: GrantRow, name: str, now: datetime) -> dict[str, Any]:
        if grant.activations_limit is not None and await live_activations(session, grant.id) >= \
                grant.activations_limit:
            raise LicenseError(422, LIMIT_REACHED, f"activation limit reached ({grant.activations_limit})")
        activation = ActivationRow(id="lki_" + secrets.token_urlsafe(18), grant_id=grant.id, name=name,
                                   created_at=now)
        session.add(activation)
        session.add(_audit(grant, "activated", f"instance {activation.id} ({name})", now))
        await learn_customer(session, grant)
        return instance_json(grant, activation, self.catalog)

    async def _activate_at_dodo(self, grant_id: str, key: str, name: str) -> dict[str, Any]:
        assert self.dodo is not None
        try:
            answer = await self.dodo.activate(key, name)
        except DodoUnreachable as exc:
            raise _unreachable("activate", exc) from None
        except DodoRefused as exc:
            raise _passed_on("activate", exc) from None
        try:
            return await self._record_dodo_activation(grant_id, answer)
        except Exception:
            await self._give_back(key, answer.id)
            raise

    async def _record_dodo_activation(self, grant_id: str, answer: LicenseActivateResponse) -> dict[str, Any]:
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            grant = await session.get(GrantRow, grant_id)
            if grant is None:
                raise LicenseError(404, NOT_FOUND, "license key not found")
            customer = answer.customer
            if customer is not None:  # Dodo's own record of its customer is the fresher one
                grant.customer_id = grant.customer_id or customer.customer_id or None
                grant.customer_name = customer.name or grant.customer_name
                grant.email = customer.email or grant.email
            await learn_customer(session, grant)
            session.add(ActivationRow(id=answer.id, grant_id=grant.id, name=answer.name,
                                      created_at=answer.created_at or now))
            session.add(_audit(grant, "activated", f"instance {answer.id} ({answer.name}) at Dodo", now))
            return dodo_instance_json(grant, answer, self.catalog)

    async def _give_back(self, key: str, instance_id: str) -> None:
        """Dodo gave a seat the store could not record: deactivate it there, so the counts agree."""
        assert self.dodo is not None
        try:
            await self.dodo.deactivate(key, instance_id)
        except (DodoUnreachable, DodoRefused) as exc:
            log.error("Dodo activated instance %s but it could not be recorded nor given back (%s): "
                      "Dodo counts one activation more than this service", instance_id, exc)

    async def deactivate(self, license_key: str, instance_id: str) -> None:
        """Free a seat. Deactivating an instance twice is not an error (a client may retry)."""
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            grant = await _grant(session, license_key, for_update=True)
            activation = await session.get(ActivationRow, instance_id)
            if activation is not None and activation.grant_id != grant.id:
                activation = None
            if not self._at_dodo(grant):
                if activation is None:
                    raise LicenseError(403, INSTANCE_NOT_FOUND, "license key instance not found for this license key")
                _deactivated(session, grant, activation, now, "", self.actor)
                return
            grant_id, key, known = grant.id, str(grant.license_key), activation is not None
        await self._deactivate_at_dodo(grant_id, key, instance_id, known)

    async def _deactivate_at_dodo(self, grant_id: str, key: str, instance_id: str, known: bool) -> None:
        assert self.dodo is not None
        try:
            await self.dodo.deactivate(key, instance_id)
        except DodoUnreachable as exc:
            raise _unreachable("deactivate", exc) from None
        except DodoRefused as exc:
            # An instance of this key that Dodo no longer has was deactivated already (a retry, or
            # an answer we could not record): the local row follows, and the app gets its 200.
            if not (known and exc.status == 403):
                raise _passed_on("deactivate", exc) from None
        now = utcnow()
        async with self.db.sessions() as session, session.begin():
            grant = await session.get(GrantRow, grant_id)
            activation = await session.get(ActivationRow, instance_id)
            if grant is not None:
                if activation is not None and activation.grant_id == grant.id:
                    _deactivated(session, grant, activation, now, " at Dodo", self.actor)
                elif not known:
                    text = f"instance {instance_id} at Dodo (not activated here)"
                    session.add(_audit(grant, "deactivated", text, now, self.actor))


def _deactivated(session: AsyncSession, grant: GrantRow, activation: ActivationRow, now: datetime, where: str,
                 actor: str) -> None:
    if activation.deactivated_at is None:
        activation.deactivated_at = now
        session.add(_audit(grant, "deactivated", f"instance {activation.id} ({activation.name}){where}", now, actor))


async def _local_state(session: AsyncSession, grant: GrantRow, instance_id: str | None) -> dict[str, Any]:
    """What SQL says of the key (for a Dodo key: what Dodo last said, plus our own revocations)."""
    valid = usable(grant, utcnow()) is None
    if valid and instance_id is not None:
        activation = await session.get(ActivationRow, instance_id)
        valid = activation is not None and activation.grant_id == grant.id and activation.deactivated_at is None
    return {
        "valid": valid,
        "status": grant.status,
        "product_id": grant.product_id,
        "expires_at": grant.expires_at.isoformat() if grant.expires_at else None,
        "activations_limit": grant.activations_limit,
        "activations": await live_activations(session, grant.id),
    }
