"""PostgreSQL stopped: the receiver answers 503 (so Dodo retries) and both processes recover by
themselves once it is back; nothing acknowledged is lost, nothing is granted twice.

The test runs its own PostgreSQL cluster (never the machine's shared one) and stops and starts it."""

from __future__ import annotations

import time

from tests.faults.conftest import MakeStack
from tests.faults.procs import FaultStack, elapsed_since
from tests.faults.servers import PrivatePostgres
from tests.support import wait_until

BEFORE = 40
DURING = 20


async def _ready(stack: FaultStack) -> bool:
    return (await stack.http.get(f"{stack.base_url}/ready")).status_code == 200


async def test_postgres_outage_answers_503_then_recovers(build_stack: MakeStack,
                                                         private_postgres: PrivatePostgres) -> None:
    # Handlers take a while, so some are in flight when the database goes away.
    stack = await build_stack(DATABASE_URL=private_postgres.url, FAULT_HANDLER_SECONDS="0.5")
    upgrade = stack.cli("db", "upgrade")
    assert upgrade.returncode == 0, upgrade.stderr
    await stack.create_grants_table()
    web = await stack.start_web()
    worker = await stack.start_worker()
    started = time.monotonic()
    before = [f"pay_pg_before_{i:03d}" for i in range(BEFORE)]
    assert set((await stack.send_payments(before)).values()) == {200}

    async def some_running() -> bool:
        return (await stack.run_statuses())["running"] > 0

    await wait_until(some_running, 30, what="handlers in flight")
    private_postgres.stop()  # every connection is cut at once

    during = [f"pay_pg_during_{i:03d}" for i in range(DURING)]
    codes = await stack.send_payments(during)
    assert set(codes.values()) == {503}, "nothing is acknowledged that is not stored"
    _, response = await stack.send_payment(during[0])
    assert response.json() == {"error": "store unavailable, retry later"}
    ready = await stack.http.get(f"{stack.base_url}/ready")
    assert (ready.status_code, ready.json()["sql"]) == (503, "unavailable")

    private_postgres.start()
    await wait_until(lambda: _ready(stack), 30, what="/ready to answer 200")
    codes = await stack.send_payments(during)  # Dodo's retry
    assert set(codes.values()) == {200}, "the first retry after recovery is accepted"
    statuses = await stack.wait_processed(BEFORE + DURING, timeout=120)
    took = elapsed_since(started)
    assert statuses == {"processed": BEFORE + DURING}
    assert await stack.grants() == dict.fromkeys(before + during, 1)
    assert web.alive() and worker.alive(), "no process was restarted"
    print(f"\nPostgreSQL down: 503s, then {BEFORE + DURING} orders processed {took}s after the first")
