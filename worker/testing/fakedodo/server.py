"""A fake of Dodo's REST API, enough for reconciliation: the list and detail endpoints of payments,
refunds, disputes and subscriptions, with Dodo's paging (`page_size` ≤ 100, `page_number` from 0,
`{"items": [...]}`, no total), its filters, bearer auth, and 429s with `Retry-After` on demand.

`ROUTES` below is the one table of what it serves (paths, query parameters, response schemas);
the project's tests/fakedodo/test_spec.py checks that table, and every answer's shape, against
Dodo's published OpenAPI spec so the fake cannot drift from the real API.

It also serves Dodo's public licence endpoints (`FakeLicenses`, `LICENSE_ROUTES`: activate,
validate, deactivate, with each key's `instances_count`); the project's
tests/entitlements/test_dodo_licenses.py checks those against the spec.

Run it alone (the benchmark does): python -m worker.testing.fakedodo --port 8123 --payments 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

PAGING = {"page_size", "page_number", "created_at_gte", "created_at_lte"}


@dataclass(frozen=True)
class ListRoute:
    path: str
    collection: str
    schema: str  # response schema in the spec's components
    params: frozenset[str]
    item_fields: tuple[str, ...]  # a list item is the full object cut down to these


@dataclass(frozen=True)
class DetailRoute:
    path: str  # with its {param}
    collection: str
    schema: str


PAYMENT_ITEM = ("payment_id", "total_amount", "currency", "customer", "created_at", "brand_id",
                "digital_products_delivered", "metadata", "payment_method", "payment_method_type", "status",
                "subscription_id")
REFUND_ITEM = ("refund_id", "payment_id", "business_id", "status", "created_at", "is_partial", "amount",
               "currency", "reason")
DISPUTE_ITEM = ("dispute_id", "payment_id", "business_id", "amount", "currency", "dispute_status",
                "dispute_stage", "created_at")
SUBSCRIPTION_ITEM = ("subscription_id", "recurring_pre_tax_amount", "tax_inclusive", "currency", "status",
                     "created_at", "product_id", "quantity", "trial_period_days", "subscription_period_interval",
                     "payment_frequency_interval", "subscription_period_count", "payment_frequency_count",
                     "next_billing_date", "previous_billing_date", "customer", "metadata",
                     "cancel_at_next_billing_date", "billing", "on_demand", "cancelled_at", "discount_id",
                     "discount_cycles_remaining")

ROUTES: tuple[ListRoute | DetailRoute, ...] = (
    ListRoute("/payments", "payments", "GetPaymentsListResponse",
              frozenset(PAGING | {"status", "customer_id", "subscription_id", "brand_id"}), PAYMENT_ITEM),
    DetailRoute("/payments/{payment_id}", "payments", "PaymentResponse"),
    ListRoute("/refunds", "refunds", "GetRefundsListResponse",
              frozenset(PAGING | {"status", "customer_id"}), REFUND_ITEM),
    DetailRoute("/refunds/{refund_id}", "refunds", "RefundResponse"),
    ListRoute("/disputes", "disputes", "GetDisputesListResponse",
              frozenset(PAGING | {"dispute_status", "dispute_stage", "customer_id"}), DISPUTE_ITEM),
    DetailRoute("/disputes/{dispute_id}", "disputes", "GetDisputeResponse"),
    ListRoute("/subscriptions", "subscriptions", "GetSubscriptionsListResponse",
              frozenset(PAGING | {"status", "customer_id", "brand_id"}), SUBSCRIPTION_ITEM),
    DetailRoute("/subscriptions/{subscription_id}", "subscriptions", "SubscriptionResponse"),
)
_LISTS = {r.path: r for r in ROUTES if isinstance(r, ListRoute)}
_DETAILS = {r.path.rsplit("/", 1)[0]: r for r in ROUTES if isinstance(r, DetailRoute)}


@dataclass
class Call:
    method: str
    path: str
    query: dict[str, str]
    status: int
    at: float  # time.monotonic()


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@lru_cache(maxsize=65536)  # every list request compares each object's created_at
def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# Dodo's public licence endpoints ---------------------------------------------------------------

@dataclass(frozen=True)
class LicenseRoute:
    path: str
    request: str  # request body schema in the spec's components
    response: str | None  # response schema; None: an empty body
    status: int  # the success status the spec gives


LICENSE_ROUTES: tuple[LicenseRoute, ...] = (
    LicenseRoute("/licenses/activate", "ActivateLicenseKeyRequest", "ActivateLicenseKeyResponse", 201),
    LicenseRoute("/licenses/validate", "ValidateLicenseKeyRequest", "ValidateLicenseKeyResponse", 200),
    LicenseRoute("/licenses/deactivate", "DeactivateLicenseKeyRequest", None, 200),
)
_LICENSE_PATHS = {r.path: r for r in LICENSE_ROUTES}
# Refusals as the spec's statuses and Dodo's error-code list (api-reference/error-codes) name them.
NOT_FOUND = (404, "NOT_FOUND", "License key not found")
INACTIVE = (403, "INACTIVE_LICENSE_KEY", "License key is not active")
LIMIT = (422, "LICENSE_KEY_LIMIT_REACHED", "License key activation limit reached")
FOREIGN = (403, "LICENSE_KEY_NOT_FOUND", "License key instance not found or does not belong to this license key")


@dataclass
class FakeLicenses:
    """`POST /licenses/activate`, `/validate`, `/deactivate`: public (no bearer), bodies as the
    spec's request schemas (else 422), `instances_count` kept on each key (a `LicenseKeyResponse`)
    so tests can compare Dodo's count with the worker's. A deactivated instance is gone: a second
    deactivation is 403, like any instance the key does not have."""

    keys: dict[str, dict[str, Any]] = field(default_factory=dict)  # by the key string
    instances: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lki_ id
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)  # CustomerLimitedDetailsResponse
    products: dict[str, str | None] = field(default_factory=dict)  # product id -> name
    authorizations: list[str | None] = field(default_factory=list)  # each request's Authorization header

    def add(self, key: dict[str, Any], customer: dict[str, Any] | None = None) -> dict[str, Any]:
        self.keys[key["key"]] = key
        if customer is not None:
            self.customers[customer["customer_id"]] = customer
        return key

    def live(self, key_id: str) -> list[dict[str, Any]]:
        return [i for i in self.instances.values() if i["license_key_id"] == key_id]

    def answer(self, path: str, body: Any) -> tuple[int, Any]:
        fields = {"/licenses/activate": ("license_key", "name"), "/licenses/validate": ("license_key",),
                  "/licenses/deactivate": ("license_key", "license_key_instance_id")}[path]
        instance = body.get("license_key_instance_id") if isinstance(body, dict) else None
        if not isinstance(body, dict) or not all(isinstance(body.get(f), str) for f in fields) \
                or not isinstance(instance, str | None):
            return 422, {"code": "INVALID_REQUEST_BODY", "message": "Your request body is invalid."}
        key = self.keys.get(body["license_key"])
        if path == "/licenses/validate":
            return 200, {"valid": key is not None and self._usable(key) and (
                instance is None or self.instances.get(instance, {}).get("license_key_id") == key["id"])}
        if key is None:
            return _refused(NOT_FOUND)
        if path == "/licenses/activate":
            return self._activate(key, body["name"])
        found = self.instances.get(body["license_key_instance_id"])
        if found is None or found["license_key_id"] != key["id"]:
            return _refused(FOREIGN)
        del self.instances[found["id"]]
        key["instances_count"] = len(self.live(key["id"]))
        return 200, None

    def _activate(self, key: dict[str, Any], name: str) -> tuple[int, Any]:
        if not self._usable(key):
            return _refused(INACTIVE)
        if key.get("activations_limit") is not None and len(self.live(key["id"])) >= key["activations_limit"]:
            return _refused(LIMIT)
        instance = {"id": f"lki_{uuid.uuid4().hex[:20]}", "license_key_id": key["id"], "name": name,
                    "business_id": key["business_id"], "created_at": iso(datetime.now(UTC))}
        self.instances[instance["id"]] = instance
        key["instances_count"] = len(self.live(key["id"]))
        customer = self.customers.get(key["customer_id"], {"customer_id": key["customer_id"], "name": "", "email": ""})
        return 201, {**instance, "customer": customer,
                     "product": {"product_id": key["product_id"], "name": self.products.get(key["product_id"])}}

    @staticmethod
    def _usable(key: dict[str, Any]) -> bool:
        expires = key.get("expires_at")
        return bool(key["status"] == "active" and (expires is None or parse_time(expires) > datetime.now(UTC)))


def _refused(refusal: tuple[int, str, str]) -> tuple[int, Any]:
    status, code, message = refusal
    return status, {"code": code, "message": message}


@dataclass
class FakeDodo:
    """The fake's data and behaviour. Add objects with `add` (worker/testing/fakedodo/data.py builds them)."""

    api_key: str = "sk_test_fake_0123456789"
    business_id: str = "bus_fake"
    page_number_cap: int | None = None  # like Dodo's unpublished cap on deep paging
    rate_limit_every: int | None = None  # every Nth request answers 429
    retry_after: str = "1"
    delay: float = 0.0  # seconds added to every answer
    collections: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {
        "payments": {}, "refunds": {}, "disputes": {}, "subscriptions": {}})
    calls: list[Call] = field(default_factory=list)
    licenses: FakeLicenses = field(default_factory=FakeLicenses)  # the public /licenses/* endpoints
    gate: asyncio.Event | None = None  # when set, list requests wait for it to be set
    _throttle: list[str] = field(default_factory=list)  # Retry-After values of the next 429s
    _errors: list[int] = field(default_factory=list)  # statuses of the next failing answers
    gone: set[str] = field(default_factory=set)  # ids still listed whose detail answers 404
    _sorted: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    # data --------------------------------------------------------------------------------
    def add(self, collection: str, obj: dict[str, Any]) -> dict[str, Any]:
        key = {"payments": "payment_id", "refunds": "refund_id", "disputes": "dispute_id",
               "subscriptions": "subscription_id"}[collection]
        self.collections[collection][obj[key]] = obj
        self._sorted.pop(collection, None)
        return obj

    # helpers for tests: realistic objects (data.py), `fields` merged in deeply --------------
    def add_payment(self, created_at: datetime | None = None, **fields: Any) -> dict[str, Any]:
        """A payment (succeeded unless `status=` says otherwise), created 3 minutes ago unless
        told: older than a scheduled scan's settle time."""
        from worker.testing.fakedodo import data

        made = data.payment(self._number(), created_at=created_at or _minutes_ago(3),
                            status=fields.get("status", "succeeded"))
        return self.add("payments", _merged(made, fields))

    def add_refund(self, payment: dict[str, Any], created_at: datetime | None = None, **fields: Any
                   ) -> dict[str, Any]:
        """A refund of `payment` (also listed in the payment's `refunds`, as Dodo shows it)."""
        from worker.testing.fakedodo import data

        made = self.add("refunds", _merged(data.refund(payment, self._number(),
                                                       created_at=created_at or _minutes_ago(2)), fields))
        payment.setdefault("refunds", []).append({k: v for k, v in made.items() if k != "customer"})
        return made

    def add_dispute(self, payment: dict[str, Any], created_at: datetime | None = None, **fields: Any
                    ) -> dict[str, Any]:
        """A dispute of `payment` (lost unless `dispute_status=` says otherwise)."""
        from worker.testing.fakedodo import data

        made = data.dispute(payment, self._number(), created_at=created_at or _minutes_ago(2))
        return self.add("disputes", _merged(made, fields))

    def add_subscription(self, created_at: datetime | None = None, **fields: Any) -> dict[str, Any]:
        """A subscription (active unless `status=` says otherwise)."""
        from worker.testing.fakedodo import data

        made = data.subscription(self._number(), created_at=created_at or _minutes_ago(3),
                                 status=fields.get("status", "active"))
        return self.add("subscriptions", _merged(made, fields))

    def _number(self) -> int:
        return 900_000 + sum(len(c) for c in self.collections.values())

    def throttle_next(self, count: int = 1, retry_after: str = "1") -> None:
        """The next `count` requests answer 429 with this Retry-After."""
        self._throttle.extend([retry_after] * count)

    def fail_next(self, count: int = 1, status: int = 503) -> None:
        """The next `count` requests answer this server error."""
        self._errors.extend([status] * count)

    def count(self, path: str, status: int | None = None) -> int:
        return sum(1 for c in self.calls if c.path == path and (status is None or c.status == status))

    def api_calls(self) -> int:
        return len(self.calls)

    # serving -----------------------------------------------------------------------------
    def answer(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]
               ) -> tuple[int, dict[str, str], Any]:
        if headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, {}, {"code": "UNAUTHORIZED", "message": "invalid API key"}
        if self._throttle or (self.rate_limit_every and (len(self.calls) + 1) % self.rate_limit_every == 0):
            wait = self._throttle.pop(0) if self._throttle else self.retry_after
            return 429, {"retry-after": wait}, {"code": "TOO_MANY_REQUESTS", "message": "rate limited"}
        if self._errors:
            return self._errors.pop(0), {}, {"code": "INTERNAL_SERVER_ERROR", "message": "try again"}
        if method != "GET":
            return 405, {}, {"code": "METHOD_NOT_ALLOWED", "message": method}
        if path in _LISTS:
            return self._list(_LISTS[path], query)
        parent, _, object_id = path.rpartition("/")
        if parent in _DETAILS and object_id:
            obj = self.collections[_DETAILS[parent].collection].get(object_id)
            if obj is None or object_id in self.gone:
                return 404, {}, {"code": "NOT_FOUND", "message": f"{object_id} not found"}
            return 200, {}, obj
        return 404, {}, {"code": "NOT_FOUND", "message": f"no route {path}"}

    def _list(self, route: ListRoute, query: dict[str, str]) -> tuple[int, dict[str, str], Any]:
        unknown = set(query) - route.params
        if unknown:
            return 422, {}, {"code": "INVALID_QUERY", "message": f"unknown parameter(s): {sorted(unknown)}"}
        try:
            page_size = int(query.get("page_size", "10"))
            page_number = int(query.get("page_number", "0"))
            gte = parse_time(query["created_at_gte"]) if "created_at_gte" in query else None
            lte = parse_time(query["created_at_lte"]) if "created_at_lte" in query else None
        except ValueError as exc:
            return 422, {}, {"code": "INVALID_QUERY", "message": str(exc)}
        if not 0 <= page_size <= 100 or page_number < 0:
            return 422, {}, {"code": "INVALID_QUERY", "message": "page_size is 0..100, page_number >= 0"}
        if self.page_number_cap is not None:
            page_number = min(page_number, self.page_number_cap)
        selected = [obj for obj in self._ordered(route.collection)
                    if _matches(obj, query, gte, lte)]
        page = selected[page_number * page_size:(page_number + 1) * page_size]
        return 200, {}, {"items": [{k: obj[k] for k in route.item_fields if k in obj} for obj in page]}

    def _ordered(self, collection: str) -> list[dict[str, Any]]:
        """Newest first, like Dodo's lists."""
        if collection not in self._sorted:
            self._sorted[collection] = sorted(self.collections[collection].values(),
                                              key=lambda o: (o["created_at"], _id(o)), reverse=True)
        return self._sorted[collection]

    async def _license_answer(self, method: str, path: str, headers: dict[str, str],
                              receive: Callable[[], Awaitable[Any]]) -> tuple[int, dict[str, str], Any]:
        """The licence endpoints are public: no bearer check, but `fail_next` and `delay` apply."""
        self.licenses.authorizations.append(headers.get("authorization"))
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body"))
        if self._errors:
            return self._errors.pop(0), {}, {"code": "INTERNAL_SERVER_ERROR", "message": "try again"}
        if method != "POST":
            return 405, {}, {"code": "METHOD_NOT_ALLOWED", "message": method}
        try:
            body = json.loads(b"".join(chunks) or b"null")
        except ValueError:
            body = None
        status, answer = self.licenses.answer(path, body)
        return status, {}, answer

    # ASGI --------------------------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"].rstrip("/") or "/"
        query = dict(parse_qsl(scope["query_string"].decode()))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if self.gate is not None and path in _LISTS:
            await self.gate.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        if path in _LICENSE_PATHS:
            status, extra, body = await self._license_answer(scope["method"], path, headers, receive)
        else:
            status, extra, body = self.answer(scope["method"], path, query, headers)
        self.calls.append(Call(scope["method"], path, query, status, time.monotonic()))
        payload = b"" if body is None else json.dumps(body).encode()  # None: no body (deactivate)
        response_headers = [(b"content-type", b"application/json")] if body is not None else []
        response_headers += [(b"content-length", str(len(payload)).encode())]
        response_headers += [(k.encode(), v.encode()) for k, v in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": payload})


def _minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)


def _merged(made: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    from worker.testing import deep_merge

    merged: dict[str, Any] = deep_merge(made, fields)
    return merged


def _id(obj: dict[str, Any]) -> str:
    for key in ("payment_id", "refund_id", "dispute_id", "subscription_id"):
        if key in obj:
            return str(obj[key])
    return ""


def _matches(obj: dict[str, Any], query: dict[str, str], gte: datetime | None, lte: datetime | None) -> bool:
    created = parse_time(obj["created_at"])
    if (gte is not None and created < gte) or (lte is not None and created > lte):
        return False
    for name in ("status", "dispute_status", "dispute_stage", "subscription_id", "brand_id"):
        if name in query and str(obj.get(name)) != query[name]:
            return False
    return "customer_id" not in query or (obj.get("customer") or {}).get("customer_id") == query["customer_id"]


def main() -> None:
    import uvicorn

    from worker.testing.fakedodo.data import populate

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--payments", type=int, default=1000)
    parser.add_argument("--refunds", type=int, default=0)
    parser.add_argument("--spread-hours", type=float, default=6.0, help="payments spread over this many hours")
    parser.add_argument("--api-key", default="sk_test_fake_0123456789")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    args = parser.parse_args()
    fake = FakeDodo(api_key=args.api_key, delay=args.latency_ms / 1000)
    populate(fake, payments=args.payments, refunds=args.refunds, spread=timedelta(hours=args.spread_hours))
    uvicorn.run(fake, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
