"""What the receiver accepts, what it refuses, and that a refusal stores nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.support import Stack, sample_envelope
from worker.signing import generate_secret, new_message_id, signed_headers
from worker.store import EventStatus


@pytest.fixture
async def web(stack_factory) -> Stack:
    """The receiver alone: these tests are about what is stored, not what is processed."""
    return await stack_factory(worker=False)


async def assert_not_stored(stack: Stack, event_id: str) -> None:
    assert await stack.event(event_id) is None


async def test_accepted_event_is_stored_verbatim(web: Stack) -> None:
    body = json.dumps(sample_envelope("payment.succeeded"), indent=1)  # any formatting: raw bytes are kept
    headers = signed_headers(web.secret, body)
    response = await web.post(body, headers)
    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}
    row = await web.event(headers["webhook-id"])
    assert row is not None
    assert row.body == body
    assert row.type == "payment.succeeded"
    assert row.object_id == "pay_2IjeQm4hqU6RA4Z4kwDee"
    assert row.status in (EventStatus.RECEIVED, EventStatus.QUEUED)


async def test_every_configured_secret_is_accepted_for_rotation(stack_factory) -> None:
    old, new = generate_secret(), generate_secret()
    stack = await stack_factory(worker=False, DODO_PAYMENTS_WEBHOOK_KEY=f"{new}, {old}")
    for secret in (old, new):
        event_id, response = await stack.send("payment.succeeded", secret=secret)
        assert response.status_code == 200, response.text
        assert await stack.event(event_id) is not None
    event_id, response = await stack.send("payment.succeeded", secret=generate_secret())
    assert response.status_code == 401
    await assert_not_stored(stack, event_id)


async def test_one_valid_signature_among_several_in_the_header(web: Stack) -> None:
    body = json.dumps(sample_envelope("refund.succeeded"))
    good = signed_headers(web.secret, body)
    bad = signed_headers(generate_secret(), body, good["webhook-id"], )
    good["webhook-signature"] = f"v1,bm90LWEtc2lnbmF0dXJl {bad['webhook-signature']} {good['webhook-signature']}"
    response = await web.post(body, good)
    assert response.status_code == 200
    assert await web.event(good["webhook-id"]) is not None


def _tampered(secret: str) -> tuple[str, dict[str, str]]:
    body = json.dumps(sample_envelope("payment.succeeded"))
    headers = signed_headers(secret, body)
    return body.replace("1900", "19"), headers


@pytest.mark.parametrize(
    "case",
    ["tampered body", "wrong secret", "stale timestamp", "future timestamp", "missing id",
     "missing timestamp", "missing signature", "garbage signature", "non-numeric timestamp",
     "signature for another id"],
)
async def test_bad_signatures_are_refused_with_401_and_store_nothing(web: Stack, case: str) -> None:
    body = json.dumps(sample_envelope("payment.succeeded"))
    headers = signed_headers(web.secret, body)
    if case == "tampered body":
        body, headers = _tampered(web.secret)
    elif case == "wrong secret":
        headers = signed_headers(generate_secret(), body)
    elif case == "stale timestamp":
        headers = signed_headers(web.secret, body, timestamp=datetime.now(UTC) - timedelta(minutes=6))
    elif case == "future timestamp":
        headers = signed_headers(web.secret, body, timestamp=datetime.now(UTC) + timedelta(minutes=6))
    elif case == "missing id":
        headers.pop("webhook-id")
    elif case == "missing timestamp":
        headers.pop("webhook-timestamp")
    elif case == "missing signature":
        headers.pop("webhook-signature")
    elif case == "garbage signature":
        headers["webhook-signature"] = "this is not, a signature,,"
    elif case == "non-numeric timestamp":
        headers["webhook-timestamp"] = "yesterday"
    elif case == "signature for another id":
        other = signed_headers(web.secret, body)
        headers["webhook-signature"] = other["webhook-signature"]
    response = await web.post(body, headers)
    assert response.status_code == 401, response.text
    error = response.json()["error"]
    assert web.secret not in response.text and web.secret.removeprefix("whsec_") not in response.text
    assert error
    if "webhook-id" in headers:
        await assert_not_stored(web, headers["webhook-id"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json at all", "not JSON"),
        (b'{"business_id": "bus_1", "data": {}}', "no 'type'"),
        (b'{"type": 42, "data": {}}', "no 'type'"),
        (b'["payment.succeeded"]', "no 'type'"),
        (b'{"type": "payment.succeeded"', "not JSON"),
    ],
)
async def test_signed_but_malformed_bodies_are_refused_with_400(web: Stack, body: bytes, message: str) -> None:
    headers = signed_headers(web.secret, body)
    response = await web.post(body, headers)
    assert response.status_code == 400
    assert message in response.json()["error"]
    await assert_not_stored(web, headers["webhook-id"])


async def test_oversized_body_is_refused_with_413(stack_factory) -> None:
    stack = await stack_factory(worker=False, WEBHOOK_MAX_BYTES=4096)
    envelope = sample_envelope("payment.succeeded")
    envelope["data"]["padding"] = "x" * 5000
    event_id, response = await stack.send("payment.succeeded", envelope=envelope)
    assert response.status_code == 413
    assert "4096" in response.json()["error"]
    await assert_not_stored(stack, event_id)


async def test_oversized_chunked_body_is_refused_with_413(stack_factory) -> None:
    stack = await stack_factory(worker=False, WEBHOOK_MAX_BYTES=4096)
    body = json.dumps({"type": "payment.succeeded", "data": {"padding": "x" * 10_000}}).encode()
    headers = signed_headers(stack.secret, body)

    async def chunks():
        for i in range(0, len(body), 1000):
            yield body[i:i + 1000]

    response = await stack.http.post(f"{stack.base_url}/webhooks/dodo", content=chunks(), headers=headers)
    assert response.status_code == 413
    await assert_not_stored(stack, headers["webhook-id"])


async def test_duplicate_webhook_id_answers_duplicate_and_changes_nothing(web: Stack) -> None:
    event_id, first = await web.send("payment.succeeded")
    assert first.json() == {"status": "accepted"}
    before = await web.event(event_id)
    # Dodo retries with the same id and body; even a different body under that id changes nothing.
    _, again = await web.send("payment.succeeded", event_id=event_id)
    _, other_body = await web.send("refund.succeeded", event_id=event_id)
    assert again.status_code == other_body.status_code == 200
    assert again.json() == other_body.json() == {"status": "duplicate"}
    after = await web.event(event_id)
    assert after is not None and before is not None
    assert (after.type, after.body) == (before.type, before.body)


async def test_unknown_event_type_is_stored_and_settled_as_ignored(stack_factory) -> None:
    stack = await stack_factory()
    event_id, response = await stack.send("payout.teleported", {"payout_id": "po_1", "surprise": [1, 2]})
    assert response.status_code == 200
    row = await stack.wait_status(event_id, EventStatus.IGNORED)
    assert row.type == "payout.teleported"


async def test_signed_event_with_odd_shape_is_accepted(web: Stack) -> None:
    """A correctly signed event is never rejected for its shape."""
    odd = {"type": "payment.succeeded", "data": {"payment_id": 12345, "product_cart": "not a list",
                                                 "customer": None, "metadata": [1, 2]}}
    event_id, response = await web.send("payment.succeeded", envelope=odd)
    assert response.status_code == 200
    assert await web.event(event_id) is not None


async def test_errors_are_json_for_unknown_routes(web: Stack) -> None:
    response = await web.http.get(f"{web.base_url}/nope")
    assert response.status_code == 404
    assert "error" in response.json()
    response = await web.http.get(f"{web.base_url}/webhooks/dodo")
    assert response.status_code == 405


async def test_health_ready_and_metrics(web: Stack) -> None:
    assert (await web.http.get(f"{web.base_url}/health")).status_code == 200
    ready = await web.http.get(f"{web.base_url}/ready")
    assert ready.status_code == 200
    assert ready.json()["sql"] == "ok" and ready.json()["redis"] == "ok"

    await web.send("payment.succeeded")
    await web.post(b"{}", {"webhook-id": new_message_id()})
    text = (await web.http.get(f"{web.base_url}/metrics")).text
    assert 'dodo_webhooks_received_total{result="accepted"} 1.0' in text
    assert 'dodo_webhooks_rejected_total{reason="missing_headers"} 1.0' in text
    assert "dodo_queue_depth" in text
    assert 'dodo_events{status="received"}' in text


async def test_a_concurrent_burst_with_repeats_stores_each_id_once(stack_factory) -> None:
    """Concurrent webhooks share one INSERT; repeats of an id inside one burst are duplicates."""
    import asyncio

    stack = await stack_factory()
    bodies = {new_message_id(): json.dumps(sample_envelope("payment.succeeded")) for _ in range(60)}
    posts = [(event_id, body) for event_id, body in bodies.items()]
    posts += posts[:15]  # Dodo retrying while the first delivery is still in flight
    responses = await asyncio.gather(
        *(stack.post(body, signed_headers(stack.secret, body, event_id)) for event_id, body in posts)
    )
    outcomes = [r.json()["status"] for r in responses]
    assert outcomes.count("accepted") == 60
    assert outcomes.count("duplicate") == 15
    for event_id in bodies:
        await stack.wait_status(event_id, EventStatus.PROCESSED, EventStatus.IGNORED)


async def queued_event_ids(stack: Stack) -> list[list[str]]:
    """The events of each job on the stack's queue."""
    from redis.asyncio import Redis

    client = Redis.from_url(stack.settings.REDIS_URL or "")
    try:
        job_ids = await client.zrange(stack.settings.QUEUE_NAME, 0, -1)
        jobs = [await client.get(b"arq:job:" + job_id) for job_id in job_ids]
        return [json.loads(job)["a"][0] for job in jobs if job is not None]
    finally:
        await client.aclose()


async def test_webhooks_arriving_together_share_one_job(stack_factory) -> None:
    """New events wait a moment (the enqueue window) for others to share their arq job."""
    import asyncio

    from tests.support import wait_until

    stack = await stack_factory(worker=False, WEBHOOK_ENQUEUE_WINDOW_SECONDS=1.0)
    sent = await asyncio.gather(*(stack.send("payment.succeeded") for _ in range(5)))
    assert [response.status_code for _, response in sent] == [200] * 5

    async def queued() -> list[list[str]]:
        return await queued_event_ids(stack)

    jobs = await wait_until(queued, what="the events to be queued")
    assert [sorted(job) for job in jobs] == [sorted(event_id for event_id, _ in sent)]


async def test_stopping_the_receiver_queues_what_its_window_holds(stack_factory) -> None:
    stack = await stack_factory(worker=False, WEBHOOK_ENQUEUE_WINDOW_SECONDS=1.0)
    event_id, response = await stack.send("payment.succeeded")
    assert response.status_code == 200
    await stack.stop_web()  # well within the window
    assert await queued_event_ids(stack) == [[event_id]]
