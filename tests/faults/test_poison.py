"""A poison event (a handler that always raises on it): dead after MAX_ATTEMPTS while every
other order flows; `dodo-worker events replay ID` after the fix processes it."""

from __future__ import annotations

import time

from tests.faults.conftest import MakeStack
from tests.faults.procs import elapsed_since
from tests.support import wait_until

ORDERS = 100


async def test_poison_event_dies_alone_and_replays_after_the_fix(make_stack: MakeStack) -> None:
    stack = await make_stack(MAX_ATTEMPTS="3", RETRY_BASE_SECONDS="0.2", RETRY_MAX_SECONDS="1")
    await stack.start_web()
    await stack.start_worker()
    started = time.monotonic()
    poison_id, response = await stack.send_payment("pay_poison_1")
    assert response.status_code == 200
    payments = [f"pay_ok_{i:03d}" for i in range(ORDERS)]
    assert set((await stack.send_payments(payments)).values()) == {200}

    async def poison_is_dead() -> bool:
        return bool(stack.cli_json("events", "show", poison_id)["status"] == "dead")

    await wait_until(poison_is_dead, 60, what="the poison event to be dead")
    more = [f"pay_after_{i:03d}" for i in range(20)]  # the queue still flows after the death
    assert set((await stack.send_payments(more)).values()) == {200}
    assert await stack.wait_processed(ORDERS + 20) == {"processed": ORDERS + 20, "dead": 1}
    took = elapsed_since(started)

    shown = stack.cli_json("events", "show", poison_id)
    assert shown["attempts"] == 3
    [handler] = shown["handlers"]
    assert (handler["name"].endswith("grant_access"), handler["status"], handler["attempts"]) == (True, "dead", 3)
    assert "PoisonError: cannot handle pay_poison_1" in handler["error"]
    dead = stack.cli_json("events", "list", "--status", "dead")
    assert [e["id"] for e in dead] == [poison_id]
    assert "pay_poison_1" not in await stack.grants()

    (stack.tmp / "poison-fixed").write_text("deployed the fix")  # the handler now succeeds
    replay = stack.cli("events", "replay", poison_id)
    assert replay.returncode == 0, replay.stderr
    assert await stack.wait_processed(ORDERS + 21) == {"processed": ORDERS + 21}
    shown = stack.cli_json("events", "show", poison_id)
    assert (shown["status"], shown["source"]) == ("processed", "replay")
    assert shown["handlers"][0]["status"] == "succeeded"
    assert await stack.grants() == dict.fromkeys(["pay_poison_1", *payments, *more], 1)
    print(f"\npoison: dead after 3 attempts while {ORDERS + 20} others processed in {took}s; replayed")
