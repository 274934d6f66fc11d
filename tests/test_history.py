"""Every attempt of every handler is kept: `events show` lists them all, a retry or a replay adds
to them and erases none, and what is kept of an error holds no SQL parameters."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import Stack
from tests.test_batching import Pileup, send_payment
from worker import Context, Event
from worker.registry import Registry
from worker.store import EventRow, EventStatus, HandlerRunRow, RunStatus
from worker.store.models import utcnow


async def _shown(stack: Stack, event_id: str) -> dict[str, Any]:
    code, out, err = await stack.cli("events", "show", event_id, "--json")
    assert code == 0, err
    shown: dict[str, Any] = json.loads(out)
    return shown


def _handler(shown: dict[str, Any], name: str) -> dict[str, Any]:
    return next(h for h in shown["handlers"] if h["name"].endswith(f".{name}"))


async def test_a_failed_attempt_is_kept_beside_the_one_that_succeeded(stack_factory, registry: Registry) -> None:
    calls = 0

    @registry.on("payment.succeeded")
    async def flaky(event: Event, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("upstream down")

    stack = await stack_factory(MAX_ATTEMPTS=3)
    event_id, _ = await stack.send("payment.succeeded")
    await stack.wait_status(event_id, EventStatus.PROCESSED)

    handler = _handler(await _shown(stack, event_id), "flaky")
    assert (handler["status"], handler["attempts"], handler["error"]) == ("succeeded", 2, None)
    runs = handler["runs"]
    assert [(r["attempt"], r["round"], r["status"]) for r in runs] == [(1, 1, "failed"), (2, 1, "succeeded")]
    assert runs[0]["error"].strip().endswith("ConnectionError: upstream down")
    assert "Traceback" in runs[0]["error"]
    assert runs[1]["error"] is None
    assert all(r["started_at"] and r["duration_ms"] is not None for r in runs)
    assert runs[0]["started_at"] <= runs[1]["started_at"]

    code, _, err = await stack.cli("events", "show", event_id)  # the human view lists both
    assert code == 0
    assert "#1" in err and "#2" in err and "ConnectionError: upstream down" in err


async def test_a_replay_adds_to_the_history_and_erases_nothing(stack_factory, registry: Registry) -> None:
    fixed = False

    @registry.on("refund.succeeded")
    async def poison(event: Event, ctx: Context) -> None:
        if not fixed:
            raise ValueError(f"cannot handle this refund (attempt {ctx.attempt})")

    stack = await stack_factory(MAX_ATTEMPTS=2)
    event_id, _ = await stack.send("refund.succeeded")
    await stack.wait_status(event_id, EventStatus.DEAD)
    before = _handler(await _shown(stack, event_id), "poison")["runs"]
    assert [(r["attempt"], r["status"]) for r in before] == [(1, "failed"), (2, "dead")]

    # A replay that fails again, then one after the fix.
    code, _, err = await stack.cli("events", "replay", event_id)
    assert code == 0, err
    await stack.wait_status(event_id, EventStatus.DEAD)
    fixed = True
    code, _, err = await stack.cli("events", "replay", event_id)
    assert code == 0, err
    await stack.wait_status(event_id, EventStatus.PROCESSED)

    handler = _handler(await _shown(stack, event_id), "poison")
    runs = handler["runs"]
    assert [(r["attempt"], r["round"], r["status"]) for r in runs] == [
        (1, 1, "failed"), (2, 1, "dead"), (3, 2, "failed"), (4, 2, "dead"), (5, 3, "succeeded")]
    assert runs[:2] == before, "a replay changes none of the earlier attempts"
    assert [r["error"].strip().splitlines()[-1] for r in runs[:4]] == [
        "ValueError: cannot handle this refund (attempt 1)", "ValueError: cannot handle this refund (attempt 2)",
        "ValueError: cannot handle this refund (attempt 1)", "ValueError: cannot handle this refund (attempt 2)"]
    assert (handler["status"], handler["attempts"]) == ("succeeded", 1)


async def test_a_batch_records_each_events_attempt(stack_factory, registry: Registry) -> None:
    pileup = Pileup()
    sessions: dict[str, int] = {}

    @registry.on("payment.succeeded", batched=True)
    async def grant(event: Event, ctx: Context) -> None:
        await pileup.checkpoint(event)
        sessions[event.id] = id(ctx.session)

    stack = await stack_factory(WORKER_CONCURRENCY=20)

    async def send() -> list[str]:
        return list(await asyncio.gather(*(send_payment(stack, f"pay_hist_{n}") for n in range(8))))

    ids = await pileup.run(stack, send)
    for event_id in ids:
        await stack.wait_status(event_id, EventStatus.PROCESSED)
    assert len({sessions[event_id] for event_id in ids}) == 1, "the eight went through one batch"
    for event_id in ids:
        [run] = _handler(await _shown(stack, event_id), "grant")["runs"]
        assert (run["attempt"], run["status"], run["error"]) == (1, "succeeded", None)
        assert run["started_at"] and run["duration_ms"] is not None


async def test_batched_handlers_keep_their_failed_attempts(stack_factory, registry: Registry) -> None:
    failed = {"evt_batch_history_0", "evt_batch_history_2", "evt_batch_history_4"}

    @registry.on("payment.succeeded", batched=True)
    async def grant(event: Event, ctx: Context) -> None:
        # The first attempt of half the events fails: a batch holding one rolls back, and each of
        # its events runs alone, where that failure is recorded (a rolled-back try is no attempt).
        if event.id in failed and ctx.attempt == 1:
            raise RuntimeError("first try fails")

    stack = await stack_factory(MAX_ATTEMPTS=3)
    ids = [f"evt_batch_history_{n}" for n in range(6)]
    sent = await asyncio.gather(*(stack.send("payment.succeeded", event_id=i) for i in ids))
    assert all(response.status_code == 200 for _, response in sent)
    for event_id in ids:
        await stack.wait_status(event_id, EventStatus.PROCESSED)
    for event_id in ids:
        runs = _handler(await _shown(stack, event_id), "grant")["runs"]
        expected = ["failed", "succeeded"] if event_id in failed else ["succeeded"]
        assert [r["status"] for r in runs] == expected, (event_id, runs)
        assert all(r["started_at"] for r in runs)


async def test_a_stored_error_keeps_its_type_and_message_but_no_sql_parameters(stack_factory,
                                                                                registry: Registry) -> None:
    secret = "sk_live_do_not_store_me_4242"

    @registry.on("payment.succeeded")
    async def writes_badly(event: Event, ctx: Context) -> None:
        # NOT NULL columns left out: the database refuses, and its error quotes the statement.
        await ctx.session.execute(text("INSERT INTO events (id) VALUES (:token)"), {"token": secret})

    stack = await stack_factory(MAX_ATTEMPTS=1)
    event_id, _ = await stack.send("payment.succeeded")
    await stack.wait_status(event_id, EventStatus.DEAD)

    shown = await _shown(stack, event_id)
    handler = _handler(shown, "writes_badly")
    [run] = handler["runs"]
    for error in (run["error"], handler["error"]):
        assert "IntegrityError" in error
        assert secret not in error
        assert "[parameters:" not in error and "[SQL:" not in error
        assert len(error) <= 4000
    assert secret not in json.dumps(shown)


async def test_the_http_api_shows_the_same_event_and_replays_it(stack_factory, registry: Registry) -> None:
    fixed = False

    @registry.on("refund.succeeded")
    async def poison(event: Event, ctx: Context) -> None:
        if not fixed:
            raise ValueError("not yet")

    stack = await stack_factory(MAX_ATTEMPTS=1)
    event_id, _ = await stack.send("refund.succeeded")
    await stack.wait_status(event_id, EventStatus.DEAD)
    assert stack.settings.WORKER_API_TOKEN is not None
    auth = {"Authorization": f"Bearer {stack.settings.WORKER_API_TOKEN.get_secret_value()}"}
    api = f"{stack.base_url}/v1/events"

    shown = await stack.http.get(f"{api}/{event_id}", headers=auth)
    assert shown.status_code == 200
    assert shown.json() == await _shown(stack, event_id)
    listed = await stack.http.get(api, params={"status": "dead"}, headers=auth)
    assert [e["id"] for e in listed.json()["events"]] == [event_id]
    assert (await stack.http.get(f"{api}/{event_id}")).status_code == 401
    assert (await stack.http.get(f"{api}/evt_none", headers=auth)).status_code == 404

    fixed = True
    replayed = await stack.http.post(f"{api}/{event_id}/replay", headers=auth)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["replayed"] == [event_id]
    await stack.wait_status(event_id, EventStatus.PROCESSED)
    runs = (await stack.http.get(f"{api}/{event_id}", headers=auth)).json()["handlers"][0]["runs"]
    assert [(r["attempt"], r["round"], r["status"]) for r in runs] == [(1, 1, "dead"), (2, 2, "succeeded")]


async def _left_running(stack: Stack, event_id: str, handler: str) -> None:
    """What a worker SIGKILLed during the handler's first attempt leaves behind."""
    async with stack.db.sessions() as session, session.begin():
        row = await session.get(EventRow, event_id)
        assert row is not None
        row.status, row.attempts, row.next_attempt_at = EventStatus.PROCESSING, 1, utcnow() - timedelta(seconds=1)
        session.add(HandlerRunRow(event_id=event_id, handler=handler, status=RunStatus.RUNNING, attempts=1,
                                  started_at=utcnow() - timedelta(seconds=5)))


@pytest.mark.parametrize("then", ["claim", "replay"])
async def test_an_attempt_cut_short_by_a_dead_worker_is_kept(stack_factory, registry: Registry, then: str) -> None:
    @registry.on("payment.succeeded")
    async def steady(event: Event, ctx: Context) -> None:
        pass

    stack = await stack_factory(worker=False)
    event_id, _ = await stack.send("payment.succeeded")
    await stack.wait_status(event_id, EventStatus.RECEIVED, EventStatus.QUEUED)
    await _left_running(stack, event_id, registry.handlers_for("payment.succeeded")[0].name)
    if then == "replay":  # a replay before any worker claims it again keeps the cut attempt too
        code, _, err = await stack.cli("events", "replay", event_id)
        assert code == 0, err
    await stack.start_worker()
    await stack.wait_status(event_id, EventStatus.PROCESSED)

    runs = _handler(await _shown(stack, event_id), "steady")["runs"]
    assert [(r["attempt"], r["status"]) for r in runs] == [(1, "interrupted"), (2, "succeeded")]
    assert "worker stopped" in runs[0]["error"]


async def test_a_handler_that_skips_an_event_says_so_on_the_event(stack_factory, registry: Registry) -> None:
    @registry.on("payment.succeeded")
    async def picky(event: Event, ctx: Context) -> None:
        ctx.note("skipped: test-mode payment")

    stack = await stack_factory()
    event_id, _ = await stack.send("payment.succeeded")
    await stack.wait_status(event_id, EventStatus.PROCESSED)
    handler = _handler(await _shown(stack, event_id), "picky")
    assert handler["note"] == "skipped: test-mode payment"
    assert [r["note"] for r in handler["runs"]] == ["skipped: test-mode payment"]
