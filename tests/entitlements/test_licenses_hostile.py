"""`/v1/licenses/*` against hostile callers: deep bodies, key guessing, spoofed client addresses.
Never a 5xx; refusals are Dodo's `{"code", "message"}` shape with `"error"` beside them."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx

from tests.entitlements.test_licenses import bought_key, refused
from tests.support import Stack, wait_until

DEEP = b"[" * 5000 + b"]" * 5000  # 10 KB, 5,000 levels


async def post(stack: Stack, action: str, body: Any = None, content: bytes | None = None,
               forwarded_for: str | None = None) -> httpx.Response:
    headers = {"content-type": "application/json"}
    if forwarded_for is not None:
        headers["x-forwarded-for"] = forwarded_for
    return await stack.http.post(f"{stack.base_url}/v1/licenses/{action}", json=body, content=content,
                                 headers=headers)


def guess() -> dict[str, str]:
    return {"license_key": secrets.token_hex(16)}


async def test_a_5000_deep_body_is_a_422_on_every_route(ent_stack: Stack) -> None:
    nested_object = b'{"license_key":' + DEEP + b"}"
    for action in ("validate", "activate", "deactivate"):
        for body in (DEEP, nested_object, b'{"license_key": [[[[[["x"]]]]]]}'):
            response = await post(ent_stack, action, content=body)
            refused(response, 422, "INVALID_REQUEST_BODY")
            assert "nested more than" in response.json()["message"]

    async def counted() -> bool:
        text = (await ent_stack.http.get(f"{ent_stack.base_url}/metrics")).text
        return 'dodo_license_requests_refused_total{reason="too_deep"} 9.0' in text

    await wait_until(counted, what="the refusals in /metrics")


async def test_an_unsigned_deep_webhook_is_refused_not_a_500(ent_stack: Stack) -> None:
    response = await ent_stack.http.post(f"{ent_stack.base_url}/webhooks/dodo", content=DEEP,
                                         headers={"content-type": "application/json"})
    assert response.status_code == 401


async def test_400_rapid_guesses_meet_429s_and_no_5xx(stack_factory: Any, catalog_path: Any) -> None:
    # The per-client limit alone: the process's own budget would answer some of these 503 BUSY.
    ent_stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), LICENSE_PROCESS_RATE_PER_SECOND=0)
    answers: list[httpx.Response] = []
    # 400 guesses, 4 at a time (LICENSE_CONCURRENCY: more at once from one client may meet 503 BUSY)
    for _ in range(100):
        answers += await asyncio.gather(*(post(ent_stack, "validate", guess()) for _ in range(4)))
    statuses = [r.status_code for r in answers]
    assert not [s for s in statuses if s >= 500], statuses
    assert set(statuses) == {200, 429}
    limit = ent_stack.settings.LICENSE_RATE_PER_MINUTE
    assert statuses.count(200) <= 2 * limit  # at most two windows' worth, even across a minute
    limited = [r for r in answers if r.status_code == 429]
    assert len(limited) >= 400 - 2 * limit
    for response in limited:
        refused(response, 429, "RATE_LIMITED")
        assert 1 <= int(response.headers["retry-after"]) <= 120


async def test_x_forwarded_for_is_ignored_by_default(stack_factory: Any, catalog_path: Any) -> None:
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), LICENSE_RATE_PER_MINUTE=3)
    statuses = [(await post(stack, "validate", guess(), forwarded_for=f"203.0.113.{n}")).status_code
                for n in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # one client, whatever the header says


async def test_x_forwarded_for_is_believed_from_a_trusted_proxy(stack_factory: Any, catalog_path: Any) -> None:
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), LICENSE_RATE_PER_MINUTE=3,
                                       TRUSTED_PROXIES="10.9.0.0/16, 127.0.0.1")
    distinct = [(await post(stack, "validate", guess(), forwarded_for=f"203.0.113.{n}")).status_code
                for n in range(5)]
    assert distinct == [200] * 5
    # The client's own header is ignored behind the proxy: the address our proxies saw counts.
    spoofed = [(await post(stack, "validate", guess(), forwarded_for=f"198.51.100.{n}, 203.0.113.200, 10.9.0.1"))
               .status_code for n in range(5)]
    assert spoofed == [200, 200, 200, 429, 429]


async def test_one_key_is_limited_from_any_client(stack_factory: Any, catalog_path: Any) -> None:
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), LICENSE_KEY_RATE_PER_MINUTE=2,
                                       TRUSTED_PROXIES="127.0.0.1")
    key, _ = await bought_key(stack, "pay_key_rate")
    answers = [await post(stack, "validate", {"license_key": key}, forwarded_for=f"203.0.113.{n}")
               for n in range(3)]
    assert [r.status_code for r in answers] == [200, 200, 429]
    assert answers[0].json()["valid"] is True
    # The same key typed differently is the same key.
    again = await post(stack, "validate", {"license_key": key.lower().replace("-", "")}, forwarded_for="203.0.113.9")
    refused(again, 429, "RATE_LIMITED")


async def test_past_the_concurrency_limit_the_answer_is_a_fast_503_with_retry_after(
        stack_factory: Any, catalog_path: Any) -> None:
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), LICENSE_CONCURRENCY=1,
                                       LICENSE_QUEUE_SECONDS=0, TRUSTED_PROXIES="127.0.0.1")
    answers = await asyncio.gather(*(post(stack, "validate", guess(), forwarded_for=f"203.0.113.{n}")
                                     for n in range(30)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 503}, statuses
    for response in answers:
        if response.status_code == 503:
            refused(response, 503, "BUSY")
            assert response.headers["retry-after"] == "1"


async def test_past_the_process_budget_a_flood_is_answered_503_busy_at_once(
        stack_factory: Any, catalog_path: Any) -> None:
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog_path), LICENSE_PROCESS_RATE_PER_SECOND=5,
                                       TRUSTED_PROXIES="127.0.0.1")
    # 40 callers at once, each from its own address: no per-client limit stops them.
    answers = await asyncio.gather(*(post(stack, "validate", guess(), forwarded_for=f"203.0.113.{n}")
                                     for n in range(40)))
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 503}, statuses
    assert statuses.count(200) <= 10  # the burst of 5, and what refilled while they were answered
    for response in answers:
        if response.status_code == 503:
            refused(response, 503, "BUSY")
            assert response.headers["retry-after"] == "1"
    metrics = (await stack.http.get(f"{stack.base_url}/metrics")).text
    assert 'dodo_license_requests_refused_total{reason="process_rate"}' in metrics
