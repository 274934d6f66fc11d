"""Coalescer (worker/coalesce.py): group commit with plain asyncio, no services.

Timing is driven by asyncio.Event gates, never by sleeping. What the tests rely on is the event
loop's FIFO order: tasks created (or woken) earlier take their first step earlier, and `submit`
queues its item synchronously in that first step. So calls whose tasks are created before a
batch's gate is opened are waiting by the time that batch returns and its slot is free again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from worker.coalesce import Coalescer


class Batches:
    """A `run_batch` that records each batch and blocks it until the test opens its gate."""

    def __init__(self, *, blocking: bool = True) -> None:
        self.blocking = blocking
        self.seen: list[list[Any]] = []
        self.finished: list[list[Any]] = []
        self.gates: list[asyncio.Event] = []
        self.fail: dict[int, BaseException] = {}  # batch index -> error it raises
        self.short: set[int] = set()  # batch indexes that return one result too few
        self._changed = asyncio.Condition()

    async def __call__(self, items: list[Any]) -> list[Any]:
        index = len(self.seen)
        gate = asyncio.Event()
        self.seen.append(list(items))
        self.gates.append(gate)
        async with self._changed:
            self._changed.notify_all()
        if self.blocking:
            await gate.wait()
        self.finished.append(list(items))
        if index in self.fail:
            raise self.fail[index]
        results = [f"r{item}" for item in items]
        return results[:-1] if index in self.short else results

    async def started(self, count: int) -> None:
        """Until `count` batches have started."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: len(self.seen) >= count), 5)

    def release(self, index: int) -> None:
        self.gates[index].set()


def submit_all(coalescer: Coalescer[Any, Any], items: list[Any]) -> list[asyncio.Task[Any]]:
    return [asyncio.create_task(coalescer.submit(item)) for item in items]


async def test_a_lone_call_runs_at_once_in_a_batch_of_one() -> None:
    batches = Batches(blocking=False)
    coalescer = Coalescer(batches, max_size=50)
    assert await coalescer.submit(7) == "r7"
    assert batches.seen == [[7]]
    assert await coalescer.submit(8) == "r8"
    assert batches.seen == [[7], [8]], "idle, every batch holds one call"


async def test_calls_made_while_the_slot_is_busy_go_together_into_the_next_batch() -> None:
    batches = Batches()
    coalescer = Coalescer(batches, max_size=50)
    first = asyncio.create_task(coalescer.submit(1))
    await batches.started(1)
    later = submit_all(coalescer, [2, 3, 4, 5])
    batches.release(0)
    assert await first == "r1"
    await batches.started(2)
    assert batches.seen == [[1], [2, 3, 4, 5]]
    batches.release(1)
    assert await asyncio.gather(*later) == ["r2", "r3", "r4", "r5"]
    assert len(batches.seen) == 2


async def test_max_size_caps_a_batch_and_the_rest_waits_for_the_next() -> None:
    batches = Batches()
    coalescer = Coalescer(batches, max_size=2)
    first = asyncio.create_task(coalescer.submit(1))
    await batches.started(1)
    later = submit_all(coalescer, [2, 3, 4, 5, 6])
    for index in range(4):
        batches.release(index)
        await batches.started(min(index + 2, 4))
    assert await first == "r1"
    assert await asyncio.gather(*later) == ["r2", "r3", "r4", "r5", "r6"]
    assert batches.seen == [[1], [2, 3], [4, 5], [6]]


async def test_max_running_slots_each_start_a_batch_at_once() -> None:
    batches = Batches()
    coalescer = Coalescer(batches, max_size=50, max_running=2)
    a, b = submit_all(coalescer, ["a", "b"])
    await batches.started(2)
    assert batches.seen == [["a"], ["b"]], "two free slots: two lone batches run side by side"
    waiting = submit_all(coalescer, ["c", "d", "e"])
    batches.release(1)  # the second slot frees first and takes everything waiting
    assert await b == "rb"
    await batches.started(3)
    assert batches.seen[2] == ["c", "d", "e"]
    assert not a.done(), "the first batch still runs"
    batches.release(0)
    batches.release(2)
    assert await a == "ra"
    assert await asyncio.gather(*waiting) == ["rc", "rd", "re"]


async def test_each_caller_gets_its_own_result_in_order() -> None:
    results: dict[int, list[int]] = {}

    async def squares(items: list[int]) -> list[int]:
        results[len(results)] = list(items)
        return [item * item for item in items]

    coalescer = Coalescer(squares, max_size=4)
    values = list(range(1, 21))
    assert await asyncio.gather(*(coalescer.submit(v) for v in values)) == [v * v for v in values]
    assert sorted(v for batch in results.values() for v in batch) == values, "every item ran once"
    assert all(len(batch) <= 4 for batch in results.values())


async def test_an_error_reaches_every_caller_of_its_batch_and_the_next_batch_still_runs() -> None:
    batches = Batches()
    error = ConnectionError("database went away")
    batches.fail[1] = error
    coalescer = Coalescer(batches, max_size=3)
    first = asyncio.create_task(coalescer.submit(1))
    await batches.started(1)
    doomed = submit_all(coalescer, [2, 3, 4])  # batch 1, which fails
    spared = submit_all(coalescer, [5, 6])  # batch 2, after it
    batches.release(0)
    await batches.started(2)
    batches.release(1)
    await batches.started(3)
    batches.release(2)

    assert await first == "r1"
    outcomes = await asyncio.gather(*doomed, return_exceptions=True)
    assert all(outcome is error for outcome in outcomes), outcomes
    assert await asyncio.gather(*spared) == ["r5", "r6"]
    assert batches.seen == [[1], [2, 3, 4], [5, 6]]
    last = asyncio.create_task(coalescer.submit(7))
    await batches.started(4)
    batches.release(3)
    assert await last == "r7"


async def test_a_batch_returning_the_wrong_number_of_results_fails_all_its_callers() -> None:
    batches = Batches(blocking=False)
    batches.short.add(0)
    coalescer = Coalescer(batches, max_size=10)
    with pytest.raises(RuntimeError, match="returned 0 result"):
        await coalescer.submit(1)
    assert await coalescer.submit(2) == "r2"


async def test_a_cancelled_caller_does_not_cancel_its_batch() -> None:
    batches = Batches()
    coalescer = Coalescer(batches, max_size=10)
    first = asyncio.create_task(coalescer.submit(1))
    await batches.started(1)
    b, c, d = submit_all(coalescer, [2, 3, 4])
    batches.release(0)
    await batches.started(2)
    assert batches.seen[1] == [2, 3, 4]

    c.cancel()  # e.g. its arq job timed out while the batch runs
    with pytest.raises(asyncio.CancelledError):
        await c
    batches.release(1)
    assert await first == "r1"
    assert await b == "r2"
    assert await d == "r4"
    assert batches.finished[1] == [2, 3, 4], "the batch ran to its end"

    cancelled_first = asyncio.create_task(coalescer.submit(5))
    await batches.started(3)
    cancelled_first.cancel()  # a lone caller's batch is not cancelled either
    with pytest.raises(asyncio.CancelledError):
        await cancelled_first
    after = asyncio.create_task(coalescer.submit(6))
    batches.release(2)
    await batches.started(4)
    assert batches.finished[2] == [5]
    batches.release(3)
    assert await after == "r6"


async def test_a_caller_cancelled_while_waiting_leaves_the_queue_and_its_item_never_runs() -> None:
    """A job that times out before its batch starts: nobody would take the result of its item
    (in the worker, an event claimed with no job left to finish it), so it must not run."""
    batches = Batches()
    coalescer = Coalescer(batches, max_size=50)
    first = asyncio.create_task(coalescer.submit(1))
    await batches.started(1)
    gone, kept = submit_all(coalescer, [2, 3])
    await asyncio.sleep(0)  # one loop turn: both calls are queued behind batch 0
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    again = asyncio.create_task(coalescer.submit(2))  # the same item submitted again later
    batches.release(0)
    assert await first == "r1"
    await batches.started(2)
    assert batches.seen[1] == [3, 2], "the cancelled call left; the new one for the same item runs"
    batches.release(1)
    assert (await kept, await again) == ("r3", "r2")


async def test_close_cancels_waiting_calls_and_running_batches() -> None:
    batches = Batches()
    coalescer = Coalescer(batches, max_size=10)
    running = asyncio.create_task(coalescer.submit(1))
    await batches.started(1)
    waiting = submit_all(coalescer, [2, 3])
    closing = asyncio.create_task(coalescer.close())  # runs after the waiting calls queued up
    await closing
    await asyncio.wait([running, *waiting])
    assert all(task.cancelled() for task in waiting)
    with pytest.raises(asyncio.CancelledError):
        running.result()
    assert batches.seen == [[1]], "the waiting calls never ran"
    assert batches.finished == [], "the running batch was cancelled"
    assert not coalescer.busy
    with pytest.raises(RuntimeError, match="closed"):
        await coalescer.submit(4)


@pytest.mark.parametrize("options", [{"max_size": 0}, {"max_size": 1, "max_running": 0},
                                     {"max_size": -3}, {"max_size": 5, "max_running": -1}])
def test_sizes_below_one_are_refused(options: dict[str, int]) -> None:
    async def run(items: list[int]) -> list[int]:
        return items

    with pytest.raises(ValueError, match="at least 1"):
        Coalescer(run, **options)


def test_sizes_of_one_are_accepted() -> None:
    async def run(items: list[int]) -> list[int]:
        return items

    coalescer = Coalescer(run, max_size=1, max_running=1)
    assert (coalescer.max_size, coalescer.max_running) == (1, 1)
