"""What a paid product grants: a licence key per unit, each file, each hook, as the catalog says."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from worker.entitlements.catalog import Catalog, ProductSpec
from worker.entitlements.models import GrantKind
from worker.entitlements.service import GrantKey, Grants, Initial, NewGrant, Owner
from worker.events import Customer, Payload
from worker.store.models import utcnow


def owner_of(data: Payload, *, payment_id: str | None = None, subscription_id: str | None = None) -> Owner:
    customer = data.get("customer")
    if not isinstance(customer, Customer | Payload):
        customer = None
    metadata = data.get("metadata")
    return Owner(
        customer_id=(customer.get("customer_id") if customer else None) or data.get("customer_id"),
        email=customer.get("email") if customer else None,
        customer_name=customer.get("name") if customer else None,
        business_id=data.get("business_id"),
        payment_id=payment_id,
        subscription_id=subscription_id,
        metadata=dict(metadata) if isinstance(metadata, dict) else {},
    )


async def grant_product(grants: Grants, *, source: str, source_id: str, product_id: str, spec: ProductSpec,
                        owner: Owner, units: int = 1, initial: Initial | None = None,
                        activations_limit: Any = "catalog") -> list[str]:
    """Create the product's grants that do not exist yet (in one statement); the new ones' ids."""
    new = plan_product(grants.catalog, source=source, source_id=source_id, product_id=product_id, spec=spec,
                       units=units, activations_limit=activations_limit)
    return await grants.insert_many(new, owner, initial)


def plan_product(catalog: Catalog, *, source: str, source_id: str, product_id: str, spec: ProductSpec,
                 units: int = 1, activations_limit: Any = "catalog") -> list[NewGrant]:
    """The grants a product gives, as the catalog says: a licence key per unit, each file, each hook."""
    new: list[NewGrant] = []
    if spec.license_key is not None:
        limit = spec.license_key.activations_limit if activations_limit == "catalog" else activations_limit
        days = spec.license_key.expires_after_days
        for unit in range(max(1, units)):
            new.append(NewGrant(GrantKey(source, source_id, product_id, GrantKind.LICENSE_KEY, "", unit),
                                license=spec.license_key, activations_limit=limit,
                                expires_at=utcnow() + timedelta(days=days) if days else None))
    for ref in spec.files:
        file_spec = catalog.file(ref)
        new.append(NewGrant(GrantKey(source, source_id, product_id, GrantKind.FILE, ref),
                            file_name=file_spec.name if file_spec else ref.rsplit("/", 1)[-1]))
    for url in spec.hooks:
        new.append(NewGrant(GrantKey(source, source_id, product_id, GrantKind.HOOK, url)))
    return new
