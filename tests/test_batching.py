"""Under load the worker batches events (worker/dispatch.py, worker/coalesce.py): one claim for
many events and one transaction for their `@on(..., batched=True)` handlers. Through the real
stack (HTTP receiver, arq worker, Redis, SQLite / PostgreSQL), with what a user would check:
event statuses, run records and the rows the handlers wrote.

Batching is made certain without sleeping: "blocker" events occupy every slot of the worker's
batcher (their batched handler waits on a gate, before any SQL), the events under test are sent
and queue up behind them, then the gate opens and they go together into one batch.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import text

from tests.support import Stack, wait_until
from worker import Context, Event
from worker.registry import Registry, RegistryError
from worker.samples import load_sample
from worker.store import EventStatus, RunStatus

PAYMENT = "payment.succeeded"


async def send_payment(stack: Stack, payment_id: str, event_type: str = PAYMENT) -> str:
    """A distinct event: the bundled sample with its own payment id."""
    data = {**load_sample(event_type)["data"], "payment_id": payment_id}
    event_id, response = await stack.send(event_type, data)
    assert response.status_code == 200, response.text
    return event_id


async def create_marks(stack: Stack) -> None:
    async with stack.db.engine.begin() as connection:
        await connection.execute(text("CREATE TABLE batch_marks (event_id TEXT NOT NULL, payment_id TEXT NOT NULL)"))


async def write_mark(event: Event, ctx: Context) -> None:
    await ctx.session.execute(text("INSERT INTO batch_marks (event_id, payment_id) VALUES (:e, :p)"),
                              {"e": event.id, "p": event.data.get("payment_id")})


async def marks(stack: Stack) -> Counter[str]:
    """How many rows each event's handlers left in batch_marks (committed only)."""
    async with stack.db.engine.connect() as connection:
        rows = (await connection.execute(text("SELECT event_id FROM batch_marks"))).scalars().all()
    return Counter(rows)


class Pileup:
    """Holds the worker's batcher busy so that events sent meanwhile form one batch."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.entered: list[str] = []
        self.blockers: list[str] = []

    async def checkpoint(self, event: Event) -> None:
        """Call first in a batched handler: a blocker's waits for the gate (before any SQL, so it
        holds no lock, not even SQLite's write lock)."""
        if str(event.data.get("payment_id", "")).startswith("pay_block") and not self.gate.is_set():
            self.entered.append(event.id)
            await self.gate.wait()

    async def _entered(self, count: int) -> None:
        async def check() -> bool:
            return len(self.entered) >= count

        await wait_until(check, what=f"{count} blocker(s) to hold the batcher")

    async def run(self, stack: Stack, send: Any, before_release: Any = None) -> list[str]:
        """Block every slot, `await send()` (returns the event ids), wait until all those events
        wait in the batcher, `await before_release(ids)` if given, open the gate; returns the ids
        sent."""
        self.blockers.append(await send_payment(stack, "pay_block_0"))
        await self._entered(1)
        coalescer = stack.worker_runtime.coalescers["events"]
        for slot in range(1, coalescer.max_running):  # one blocker per batch that may run at once
            self.blockers.append(await send_payment(stack, f"pay_block_{slot}"))
            await self._entered(slot + 1)
        ids: list[str] = await send()

        async def all_waiting() -> bool:
            return len(coalescer._waiting) >= len(ids)  # the calls queued up behind the blockers

        await wait_until(all_waiting, what=f"{len(ids)} events to wait in the batcher")
        if before_release is not None:
            await before_release(ids)
        self.gate.set()
        return ids


def short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


async def run_summary(stack: Stack, event_id: str) -> dict[str, tuple[str, int]]:
    return {short(name): (run.status, run.attempts) for name, run in (await stack.runs(event_id)).items()}


async def test_many_events_at_once_go_through_one_batch(stack_factory, registry: Registry) -> None:
    pileup = Pileup()
    prepared: list[tuple[list[str], Any]] = []  # per prepare call: its events' ids and the session
    sessions: dict[str, Any] = {}

    async def prepare(events: list[Event], session: Any) -> None:
        prepared.append(([e.id for e in events], session))

    @registry.on(PAYMENT, batched=True, prepare=prepare)
    async def grant(event: Event, ctx: Context) -> None:
        await pileup.checkpoint(event)
        sessions[event.id] = ctx.session
        await write_mark(event, ctx)

    stack = await stack_factory(WORKER_CONCURRENCY=50)
    await create_marks(stack)

    async def send() -> list[str]:
        payments = [send_payment(stack, f"pay_many_{i}") for i in range(30)]
        # Two events no handler wants ride in the same batch and are settled by its claim.
        unknown = [stack.send("credit.added", {"id": f"cle_{i}", "amount": "5"}) for i in range(2)]
        sent = await asyncio.gather(*payments, *unknown)
        return [item if isinstance(item, str) else item[0] for item in sent]

    ids = await pileup.run(stack, send)
    payment_ids, unknown_ids = ids[:30], ids[30:]

    for event_id in [*pileup.blockers, *payment_ids]:
        row = await stack.wait_status(event_id, EventStatus.PROCESSED)
        assert row.attempts == 1
        assert await run_summary(stack, event_id) == {"grant": (RunStatus.SUCCEEDED, 1)}
    for event_id in unknown_ids:
        await stack.wait_status(event_id, EventStatus.IGNORED)
        assert await stack.runs(event_id) == {}

    assert await marks(stack) == Counter({event_id: 1 for event_id in [*pileup.blockers, *payment_ids]})
    # The blockers ran as batches of one (no prepare); the 30 events in one batch, one prepare.
    assert [len(event_ids) for event_ids, _ in prepared] == [30]
    batch_ids, batch_session = prepared[0]
    assert sorted(batch_ids) == sorted(payment_ids)
    assert all(sessions[event_id] is batch_session for event_id in payment_ids), "one transaction"


async def test_a_poison_event_does_not_spoil_its_batch(stack_factory, registry: Registry) -> None:
    pileup = Pileup()
    sizes: list[int] = []
    calls: Counter[str] = Counter()

    async def prepare(events: list[Event], session: Any) -> None:
        sizes.append(len(events))

    @registry.on(PAYMENT, batched=True, prepare=prepare)
    async def grant(event: Event, ctx: Context) -> None:
        await pileup.checkpoint(event)
        calls[event.data.get("payment_id")] += 1
        await write_mark(event, ctx)  # written, then rolled back for the poison one
        if event.data.get("payment_id") == "pay_poison":
            raise ValueError("cannot grant pay_poison")

    stack = await stack_factory(WORKER_CONCURRENCY=50, MAX_ATTEMPTS=3, RETRY_BASE_SECONDS=0.05)
    await create_marks(stack)
    names = [f"pay_good_{i}" for i in range(4)] + ["pay_poison"] + [f"pay_good_{i}" for i in range(4, 8)]

    async def send() -> list[str]:
        return list(await asyncio.gather(*(send_payment(stack, name) for name in names)))

    ids = await pileup.run(stack, send)
    by_name = dict(zip(names, ids, strict=True))
    poison = by_name.pop("pay_poison")

    row = await stack.wait_status(poison, EventStatus.DEAD)
    assert row.attempts == 3
    runs = await stack.runs(poison)
    (run,) = runs.values()
    assert (run.status, run.attempts) == (RunStatus.DEAD, 3)
    assert "cannot grant pay_poison" in (run.last_error or "")
    # Once in the batch (rolled back), then once per attempt on its own.
    assert calls["pay_poison"] == 1 + 3

    for event_id in by_name.values():
        row = await stack.wait_status(event_id, EventStatus.PROCESSED)
        assert row.attempts == 1, "the batch's rollback costs the others no attempt"
        assert await run_summary(stack, event_id) == {"grant": (RunStatus.SUCCEEDED, 1)}
    written = await marks(stack)
    assert poison not in written, "the poison event's writes were rolled back, in the batch and alone"
    assert written == Counter({event_id: 1 for event_id in [*pileup.blockers, *by_name.values()]})
    assert sizes == [len(names)], "one batch (rolled back); the retries ran alone"


async def test_batched_and_plain_handlers_of_one_event_each_run_once(stack_factory, registry: Registry) -> None:
    pileup = Pileup()
    sizes: list[int] = []
    plain_calls: Counter[str] = Counter()

    async def prepare(events: list[Event], session: Any) -> None:
        sizes.append(len(events))

    @registry.on(PAYMENT, batched=True, prepare=prepare)
    async def grant(event: Event, ctx: Context) -> None:
        await pileup.checkpoint(event)
        await write_mark(event, ctx)

    @registry.on("payment.*")
    async def notify(event: Event, ctx: Context) -> None:
        payment_id = event.data.get("payment_id")
        plain_calls[payment_id] += 1
        if payment_id == "pay_flaky" and ctx.attempt == 1:
            raise ConnectionError("mail server down")

    stack = await stack_factory(WORKER_CONCURRENCY=50, MAX_ATTEMPTS=3, RETRY_BASE_SECONDS=0.05)
    await create_marks(stack)
    names = [f"pay_mixed_{i}" for i in range(5)] + ["pay_flaky"]

    async def send() -> list[str]:
        return list(await asyncio.gather(*(send_payment(stack, name) for name in names)))

    ids = await pileup.run(stack, send)
    by_name = dict(zip(names, ids, strict=True))

    for name, event_id in by_name.items():
        row = await stack.wait_status(event_id, EventStatus.PROCESSED)
        flaky = name == "pay_flaky"
        assert row.attempts == (2 if flaky else 1)
        assert await run_summary(stack, event_id) == {
            "grant": (RunStatus.SUCCEEDED, 1),  # not run again when the plain handler is retried
            "notify": (RunStatus.SUCCEEDED, 2 if flaky else 1),
        }
    assert {name: plain_calls[name] for name in names} == {**{name: 1 for name in names}, "pay_flaky": 2}
    assert await marks(stack) == Counter({event_id: 1 for event_id in [*pileup.blockers, *ids]})
    assert sizes == [len(names)]


def test_prepare_needs_batched(registry: Registry) -> None:
    async def prepare(events: list[Event], session: Any) -> None: ...

    with pytest.raises(RegistryError, match="needs batched=True"):
        @registry.on(PAYMENT, prepare=prepare)
        async def handler(event: Event, ctx: Context) -> None: ...

    assert len(registry) == 0, "nothing was registered"

    @registry.on(PAYMENT, batched=True, prepare=prepare)
    async def fine(event: Event, ctx: Context) -> None: ...

    (handler,) = registry.handlers_for(PAYMENT)
    assert handler.batched and handler.prepare is prepare


async def test_batch_size_one_turns_batching_off(stack_factory, registry: Registry) -> None:
    pileup = Pileup()
    prepared: list[int] = []
    sessions: dict[str, Any] = {}

    async def prepare(events: list[Event], session: Any) -> None:
        prepared.append(len(events))

    @registry.on(PAYMENT, batched=True, prepare=prepare)
    async def grant(event: Event, ctx: Context) -> None:
        await pileup.checkpoint(event)
        sessions[event.id] = ctx.session
        await write_mark(event, ctx)

    stack = await stack_factory(WORKER_CONCURRENCY=50, WORKER_BATCH_SIZE=1)
    await create_marks(stack)

    async def send() -> list[str]:
        return list(await asyncio.gather(*(send_payment(stack, f"pay_single_{i}") for i in range(10))))

    ids = await pileup.run(stack, send)
    for event_id in [*pileup.blockers, *ids]:
        row = await stack.wait_status(event_id, EventStatus.PROCESSED)
        assert row.attempts == 1
        assert await run_summary(stack, event_id) == {"grant": (RunStatus.SUCCEEDED, 1)}
    assert await marks(stack) == Counter({event_id: 1 for event_id in [*pileup.blockers, *ids]})
    assert prepared == [], "every batch held one event, and prepare only runs for more"
    assert len({id(session) for session in sessions.values()}) == len(sessions), "a transaction each"


async def test_a_hanging_batched_handler_does_not_stop_the_worker(stack_factory, registry: Registry) -> None:
    """JOB_TIMEOUT_SECONDS bounds a handler: other events go on being processed."""
    release = asyncio.Event()
    hung: list[str] = []

    @registry.on(PAYMENT, batched=True)
    async def grant(event: Event, ctx: Context) -> None:
        if str(event.data.get("payment_id")).startswith("pay_hang"):
            hung.append(event.id)
            await release.wait()  # e.g. a lock that is never granted
        await write_mark(event, ctx)

    stack = await stack_factory(WORKER_CONCURRENCY=10, JOB_TIMEOUT_SECONDS=1, SHUTDOWN_GRACE_SECONDS=1)
    await create_marks(stack)
    try:
        await send_payment(stack, "pay_hang_0")

        async def hung_count() -> int:
            return len(hung)

        await wait_until(hung_count, what="the first handler to hang")
        for slot in range(1, stack.worker_runtime.coalescers["events"].max_running):
            await send_payment(stack, f"pay_hang_{slot}")

            async def more(slot: int = slot) -> bool:
                return len(hung) > slot

            await wait_until(more, what="another handler to hang")
        good = await send_payment(stack, "pay_after_hang")
        await stack.wait_status(good, EventStatus.PROCESSED, timeout=5)
        assert await marks(stack) == Counter({good: 1})
    finally:
        release.set()


