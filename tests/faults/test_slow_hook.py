"""The slow hook: one merchant endpoint hangs, another is healthy. Real `web` and `worker`
processes; the healthy endpoint's deliveries, including those of an order paid while the slow
one hangs, must land well within HOOKS_TIMEOUT_SECONDS, and the hanging ones must still end
as before (a failed attempt at the timeout, retried with back-off)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.entitlements.receiver import HookEndpoint, serve
from tests.faults.conftest import MakeStack
from tests.faults.procs import PRODUCT, FaultStack, elapsed_since
from tests.support import wait_until
from worker.entitlements.models import DeliveryRow
from worker.signing import generate_secret

HOOKS_TIMEOUT_SECONDS = 10.0
BOUND_SECONDS = 4.0  # the healthy endpoint's deliveries after the order is acknowledged


class HangingEndpoint:
    """Reads each request, then answers nothing until `release` (the worker's timeout cuts it)."""

    def __init__(self) -> None:
        self.arrived: list[str] = []
        self.released = asyncio.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.arrived.append(headers.get("webhook-id", ""))
        await self.released.wait()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def catalog(path: Path, hooks: list[str]) -> Path:
    (path / "guide.pdf").write_bytes(b"%PDF-1.4 fault suite\n")
    (path / "entitlements.toml").write_text(
        f'[products.{PRODUCT}]\nlicense_key = {{ activations_limit = 2 }}\nfiles = ["guide.pdf"]\n'
        f"hooks = {hooks!r}\n".replace("'", '"'))
    return path / "entitlements.toml"


async def rows_to(stack: FaultStack, target: str) -> list[DeliveryRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(DeliveryRow).where(DeliveryRow.target == target)))


async def test_a_hanging_endpoint_does_not_hold_a_healthy_ones_deliveries(make_stack: MakeStack,
                                                                         tmp_path: Path) -> None:
    slow, healthy = HangingEndpoint(), HookEndpoint()
    async with serve(slow) as slow_base, serve(healthy) as healthy_base:
        slow_url, healthy_url = f"{slow_base}/hang", f"{healthy_base}/provision"
        stack = await make_stack(
            ENTITLEMENTS_FILE=catalog(tmp_path, [slow_url, healthy_url]),
            HANDLER_MODULES="tests.faults.fault_handlers,handlers.entitlements",
            HOOKS_SIGNING_KEY=generate_secret(), HOOKS_ALLOW_PRIVATE_NETWORKS="true", HOOKS_ALLOW_HTTP="true",
            HOOKS_TIMEOUT_SECONDS=HOOKS_TIMEOUT_SECONDS, HOOKS_RETRY_BASE_SECONDS=60)
        await stack.start_web()
        await stack.start_worker()
        try:
            # The first order: the slow endpoint gets its three messages (licence key, file, its
            # own hook grant) and holds them.
            _, response = await stack.send_payment("pay_before")
            assert response.status_code == 200

            async def hanging() -> bool:
                return len(slow.arrived) == 3

            await wait_until(hanging, 10, what="the slow endpoint to hold its three deliveries")
            hung_at = time.monotonic()

            # The second order, paid while the slow endpoint hangs: the healthy endpoint hears
            # of both orders well before the slow one's attempts time out.
            _, response = await stack.send_payment("pay_during")
            assert response.status_code == 200
            acknowledged = time.monotonic()

            async def healthy_done() -> list[DeliveryRow] | None:
                rows = await rows_to(stack, healthy_url)
                return rows if len(rows) == 6 and all(r.status == "delivered" for r in rows) else None

            await wait_until(healthy_done, BOUND_SECONDS, what="the healthy endpoint's six deliveries")
            took = elapsed_since(acknowledged)
            still_hanging = time.monotonic() - hung_at
            assert still_hanging < HOOKS_TIMEOUT_SECONDS
            assert len(healthy.delivered()) == 6
            slow_rows = await rows_to(stack, slow_url)
            first_three = [r for r in slow_rows if r.id in slow.arrived[:3]]
            assert len(first_three) == 3 and all(
                (r.status, r.attempts, r.last_error) == ("pending", 1, None) for r in first_three)

            # The slow endpoint's attempts end as they always did: failed at the timeout, retried later.
            async def timed_out() -> list[DeliveryRow] | None:
                rows = [r for r in await rows_to(stack, slow_url) if r.id in slow.arrived[:3]]
                return rows if all(r.last_error for r in rows) else None

            ended = await wait_until(timed_out, HOOKS_TIMEOUT_SECONDS + 10, what="the slow attempts to time out")
            assert {(r.status, r.last_error) for r in ended} == {
                ("pending", f"no answer within {HOOKS_TIMEOUT_SECONDS:g}s")}
            print(f"\nslow hook: the healthy endpoint's 6 deliveries landed {took}s after the second order "
                  f"was acknowledged, {still_hanging:.2f}s into the slow endpoint's hang")
        finally:
            slow.released.set()  # lets its server stop; the worker is stopped by the fixture
