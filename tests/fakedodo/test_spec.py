"""The fake Dodo API serves only routes and query parameters that Dodo's published OpenAPI spec
has, and every answer it gives (lists, objects, each filter) validates against the spec's
response schema, with list items no richer than the spec's list item (a payment list item has
no `product_cart`: the reconciler must fetch the payment, as it must with the real API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import httpx
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from tests.dodo_spec import SPEC
from worker.testing.fakedodo import FakeDodo, serve
from worker.testing.fakedodo.data import populate, subscription
from worker.testing.fakedodo.server import ROUTES, DetailRoute, ListRoute

SPEC_URI = "urn:dodo-openapi"


@cache
def spec() -> dict[str, Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return yaml.load(SPEC.read_text(), Loader=loader)


def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


def validator(schema_name: str) -> Draft202012Validator:
    registry: Registry = Registry().with_resource(
        SPEC_URI, Resource.from_contents(spec(), default_specification=DRAFT202012))
    checker = FormatChecker()
    checker.checks("date-time", raises=ValueError)(_date_time)
    return Draft202012Validator({"$ref": f"{SPEC_URI}#/components/schemas/{schema_name}"},
                                registry=registry, format_checker=checker)


def item_properties(schema_name: str) -> set[str]:
    """Property names of a list response's item schema (`{"items": [<this>]}`)."""
    schemas = spec()["components"]["schemas"]
    ref = schemas[schema_name]["properties"]["items"]["items"]["$ref"]
    return set(schemas[ref.rsplit("/", 1)[-1]]["properties"])


def response_schema(path: str) -> str:
    content = spec()["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
    return str(content["schema"]["$ref"].rsplit("/", 1)[-1])


def test_every_route_and_parameter_the_fake_serves_is_in_the_spec() -> None:
    paths = spec()["paths"]
    for route in ROUTES:
        assert route.path in paths and "get" in paths[route.path], f"GET {route.path} is not in the spec"
        assert response_schema(route.path) == route.schema
        spec_params = {p["name"] for p in paths[route.path]["get"].get("parameters", [])}
        if isinstance(route, ListRoute):
            assert route.params <= spec_params, f"{route.path}: {sorted(route.params - spec_params)} not in spec"
            assert set(route.item_fields) <= item_properties(route.schema), route.path
        else:
            assert route.path.split("{")[1].rstrip("}") in spec_params


def _statuses(name: str) -> list[str]:
    return list(spec()["components"]["schemas"][name]["enum"])


async def test_every_answer_of_the_fake_validates_against_the_spec() -> None:
    fake = FakeDodo()
    now = datetime.now(UTC)
    populate(fake, payments=120, failed=5, refunds=4, disputes=3, subscriptions=2, now=now)
    for i, status in enumerate(_statuses("SubscriptionStatus")):
        fake.add("subscriptions", subscription(100 + i, created_at=now - timedelta(minutes=i), status=status))
    window = {"created_at_gte": (now - timedelta(days=1)).isoformat(), "created_at_lte": now.isoformat()}
    queries: dict[str, list[dict[str, Any]]] = {
        "/payments": [{}, {"status": "succeeded", "page_size": "100", "page_number": "1", **window},
                      {"status": "failed", "customer_id": "cus_000121"}],
        "/refunds": [{}, {"status": "succeeded", "page_size": "100", **window}],
        "/disputes": [{}, {"dispute_status": "dispute_lost", "page_size": "100", **window}],
        "/subscriptions": [{}, {"page_size": "100", **window}, {"status": "cancelled"}],
    }
    checked = 0
    async with serve(fake) as url, httpx.AsyncClient(
            base_url=url, headers={"Authorization": f"Bearer {fake.api_key}"}) as http:
        for route in ROUTES:
            check = validator(route.schema)
            if isinstance(route, ListRoute):
                for query in queries[route.path]:
                    response = await http.get(route.path, params=query)
                    assert response.status_code == 200, response.text
                    body = response.json()
                    check.validate(body)
                    assert body["items"] or query.get("page_number") == "1", f"{route.path} {query} is empty"
                    for item in body["items"]:
                        assert set(item) <= item_properties(route.schema)
                    checked += len(body["items"])
            else:
                assert isinstance(route, DetailRoute)
                for obj in list(fake.collections[route.collection].values())[:20]:
                    object_id = obj[route.path.split("{")[1].rstrip("}")]
                    response = await http.get(route.path.split("{")[0] + object_id)
                    assert response.status_code == 200, response.text
                    check.validate(response.json())
                    checked += 1
        # what the reconciler relies on: newest first, page 0 first, short last page, the filters
        pages = [(await http.get("/payments", params={"status": "succeeded", "page_size": "100",
                                                      "page_number": str(n)})).json()["items"]
                 for n in range(3)]
        assert [len(p) for p in pages] == [100, 20, 0]
        created = [i["created_at"] for p in pages for i in p]
        assert created == sorted(created, reverse=True)
        assert all(i["status"] == "succeeded" for p in pages for i in p)
        assert (await http.get("/payments", params={"page_size": "101"})).status_code == 422
        assert (await http.get("/payments", params={"no_such": "1"})).status_code == 422
        assert (await http.get("/payments", headers={"Authorization": "Bearer wrong"})).status_code == 401
    assert checked > 80
