"""The cart lines of a paid order that the catalog grants, with their quantities checked.

A quantity must be a whole number from 1 to the line's cap (`max_units` of the product, else
`max_units_per_line`), and the order's catalog lines together at most `max_units_per_order`:
each unit of a licence-key product is a key, so an unchecked quantity of 2^31 would plan keys
until the worker ran out of memory. Anything else is a `BadOrder`: the event goes dead at once
with the reason (retrying cannot change the payload), and nothing of the order is granted."""

from __future__ import annotations

from dataclasses import dataclass

from worker.entitlements.catalog import Catalog, ProductSpec
from worker.errors import PermanentError
from worker.events import Payment, Subscription


class BadOrder(PermanentError):
    """The order's quantities cannot be granted as sent."""


@dataclass(frozen=True)
class Line:
    product_id: str
    spec: ProductSpec
    units: int


def granted_lines(catalog: Catalog, payment: Payment) -> list[Line]:
    """The cart's lines of catalog products, in order; `BadOrder` for a quantity out of bounds."""
    about = f"payment {payment.payment_id}"
    lines: list[Line] = []
    for item in payment.product_cart or []:
        spec = catalog.product(item.product_id)
        if spec is None:
            continue
        quantity = item.quantity
        if type(quantity) is not int or quantity < 1:
            raise BadOrder(f"{about}, product {item.product_id}: quantity {quantity!r} is not a whole "
                           "number of 1 or more; nothing granted")
        cap = spec.max_units or catalog.spec.max_units_per_line
        if quantity > cap:
            setting = (f"products.{item.product_id}.max_units" if spec.max_units
                       else f"max_units_per_line (or products.{item.product_id}.max_units)")
            raise BadOrder(f"{about}, product {item.product_id}: quantity {quantity} is over the cap of {cap} "
                           f"units per line; nothing granted (raise {setting} in ENTITLEMENTS_FILE, "
                           "then `dodo-worker events replay`)")
        lines.append(Line(item.product_id, spec, quantity))
    total, cap = sum(line.units for line in lines), catalog.spec.max_units_per_order
    if total > cap:
        raise BadOrder(f"{about}: {total} units in all is over the cap of {cap} units per order; nothing "
                       "granted (raise max_units_per_order in ENTITLEMENTS_FILE, then `dodo-worker events replay`)")
    return lines


def seat_addons(catalog: Catalog, sub: Subscription) -> list[tuple[str, int]]:
    """The subscription's add-ons that the catalog counts as seats, with their quantities checked
    like a cart line's (0 is allowed: an add-on taken off); `BadOrder` otherwise, since a seat
    count of 2^31 would overflow the activations limit on every attempt."""
    addons: list[tuple[str, int]] = []
    for addon in sub.addons or []:
        if addon.addon_id not in catalog.spec.addons:
            continue
        quantity, cap = addon.quantity, catalog.spec.max_units_per_line
        if type(quantity) is not int or not 0 <= quantity <= cap:
            raise BadOrder(f"subscription {sub.subscription_id}, add-on {addon.addon_id}: quantity {quantity!r} "
                           f"is not a whole number from 0 to {cap} (max_units_per_line in ENTITLEMENTS_FILE); "
                           "nothing changed")
        addons.append((addon.addon_id, quantity))
    return addons
