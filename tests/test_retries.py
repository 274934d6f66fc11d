"""Failed handlers are retried with back-off, without re-running the ones that succeeded;
after the last attempt the event is dead, and `events replay` brings it back."""

from __future__ import annotations

import json
from collections import Counter

from worker import Context, Event
from worker.registry import Registry
from worker.retry import backoff_seconds
from worker.store import EventStatus, RunStatus


async def test_handler_failing_twice_then_succeeding(stack_factory, registry: Registry) -> None:
    calls: Counter[str] = Counter()
    keys: set[str] = set()

    @registry.on("payment.succeeded")
    async def flaky(event: Event, ctx: Context) -> None:
        calls["flaky"] += 1
        keys.add(ctx.idempotency_key)
        assert ctx.attempt == calls["flaky"]
        if calls["flaky"] <= 2:
            raise ConnectionError(f"upstream down (try {calls['flaky']})")

    @registry.on("payment.succeeded")
    async def steady(event: Event, ctx: Context) -> None:
        calls["steady"] += 1

    stack = await stack_factory(MAX_ATTEMPTS=5)
    event_id, _ = await stack.send("payment.succeeded")
    row = await stack.wait_status(event_id, EventStatus.PROCESSED)

    assert calls == {"flaky": 3, "steady": 1}
    assert len(keys) == 1, "the idempotency key is stable across attempts"
    assert row.attempts == 3
    runs = await stack.runs(event_id)
    flaky_run = next(r for name, r in runs.items() if name.endswith(".flaky"))
    steady_run = next(r for name, r in runs.items() if name.endswith(".steady"))
    assert (flaky_run.status, flaky_run.attempts) == (RunStatus.SUCCEEDED, 3)
    assert (steady_run.status, steady_run.attempts) == (RunStatus.SUCCEEDED, 1)
    assert flaky_run.last_error is None


async def test_always_failing_handler_is_dead_then_replayed_after_a_fix(stack_factory, registry: Registry) -> None:
    fixed = False
    calls: Counter[str] = Counter()

    @registry.on("refund.succeeded")
    async def poison(event: Event, ctx: Context) -> None:
        calls["poison"] += 1
        if not fixed:
            raise ValueError("cannot handle this refund")

    @registry.on("refund.*")
    async def fine(event: Event, ctx: Context) -> None:
        calls["fine"] += 1

    stack = await stack_factory(MAX_ATTEMPTS=3)
    event_id, _ = await stack.send("refund.succeeded")
    row = await stack.wait_status(event_id, EventStatus.DEAD)
    assert calls == {"poison": 3, "fine": 1}
    assert row.attempts == 3

    code, out, _ = await stack.cli("events", "show", event_id, "--json")
    shown = json.loads(out)
    assert shown["status"] == "dead"
    by_name = {h["name"].rsplit(".", 1)[-1]: h for h in shown["handlers"]}
    assert by_name["poison"]["status"] == "dead"
    assert by_name["poison"]["attempts"] == 3
    assert "cannot handle this refund" in by_name["poison"]["error"]
    assert by_name["fine"]["status"] == "succeeded"

    code, out, _ = await stack.cli("events", "list", "--status", "dead", "--json")
    assert [e["id"] for e in json.loads(out)] == [event_id]

    fixed = True
    code, out, err = await stack.cli("events", "replay", event_id)
    assert code == 0, err
    row = await stack.wait_status(event_id, EventStatus.PROCESSED)
    assert calls == {"poison": 4, "fine": 1}, "the handler that had succeeded is not run again"
    assert row.source == "replay"


async def test_replay_dead_replays_every_dead_event(stack_factory, registry: Registry) -> None:
    broken = True

    @registry.on("dispute.opened")
    async def needs_fix(event: Event, ctx: Context) -> None:
        if broken:
            raise RuntimeError("not yet")

    stack = await stack_factory(MAX_ATTEMPTS=1)
    ids = [(await stack.send("dispute.opened"))[0] for _ in range(3)]
    for event_id in ids:
        await stack.wait_status(event_id, EventStatus.DEAD)
    broken = False
    code, out, _ = await stack.cli("events", "replay", "--dead", "--json")
    assert code == 0
    assert sorted(json.loads(out)["replayed"]) == sorted(ids)
    for event_id in ids:
        await stack.wait_status(event_id, EventStatus.PROCESSED)


async def test_a_poison_event_does_not_hold_up_the_queue(stack_factory, registry: Registry) -> None:
    @registry.on("payment.failed")
    async def poison(event: Event, ctx: Context) -> None:
        raise RuntimeError("always")

    @registry.on("payment.succeeded")
    async def ok(event: Event, ctx: Context) -> None:
        return None

    stack = await stack_factory(MAX_ATTEMPTS=4, RETRY_BASE_SECONDS=0.2)
    poison_id, _ = await stack.send("payment.failed")
    good_ids = [(await stack.send("payment.succeeded"))[0] for _ in range(5)]
    for event_id in good_ids:
        await stack.wait_status(event_id, EventStatus.PROCESSED)
    await stack.wait_status(poison_id, EventStatus.DEAD)


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    for attempt, nominal in [(1, 5), (2, 10), (3, 20), (4, 40)]:
        delays = [backoff_seconds(attempt, 5, 3600) for _ in range(200)]
        assert all(nominal * 0.5 <= d <= nominal for d in delays)
        assert len(set(delays)) > 100, "jittered"
    assert all(backoff_seconds(30, 5, 60) <= 60 for _ in range(50))


async def test_unknown_event_run_after_handlers_change_is_ignored(stack_factory) -> None:
    stack = await stack_factory()
    event_id, _ = await stack.send("credit.added", {"id": "cle_1", "amount": "5"})
    await stack.wait_status(event_id, EventStatus.IGNORED)
    code, out, _ = await stack.cli("events", "list", "--type", "credit.*", "--json")
    assert [e["status"] for e in json.loads(out)] == ["ignored"]
