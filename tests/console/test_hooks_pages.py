"""The console's hooks page: deliveries by status, and Retry on one that gave up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.console.conftest import PASSWORD
from tests.console.test_grants_pages import console_trail, forged, signed_in_to
from tests.entitlements.conftest import (
    PRODUCT,
    payment,
    registry,
    send_and_wait,
    write_catalog,
)
from tests.entitlements.receiver import HookEndpoint, serve
from tests.support import Stack, wait_until
from worker.entitlements.models import DeliveryRow
from worker.signing import generate_secret

__all__ = ["registry"]  # the fixture of tests/entitlements, used here


async def deliveries(stack: Stack) -> list[DeliveryRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(DeliveryRow).order_by(DeliveryRow.created_at)))


async def test_retry_requeues_a_delivery_that_gave_up(stack_factory: Any, tmp_path: Path) -> None:
    endpoint = HookEndpoint(fail_first=1_000)
    async with serve(endpoint) as base:
        catalog = write_catalog(tmp_path, hooks=[f"{base}/provision"])
        stack: Stack = await stack_factory(
            ENTITLEMENTS_FILE=str(catalog), CONSOLE_PASSWORD=PASSWORD, HOOKS_SIGNING_KEY=generate_secret(),
            HOOKS_ALLOW_PRIVATE_NETWORKS=True, HOOKS_ALLOW_HTTP=True, HOOKS_GIVE_UP_HOURS=1 / 3600,
            HOOKS_RETRY_BASE_SECONDS=0.05, HOOKS_RETRY_MAX_SECONDS=0.2)
        await send_and_wait(stack, "payment.succeeded", payment("pay_hook", [(PRODUCT, 1)]))

        async def all_failed() -> list[DeliveryRow] | None:
            rows = await deliveries(stack)
            return rows if rows and all(r.status == "failed" for r in rows) else None

        failed = await wait_until(all_failed, what="the deliveries to give up")
        console = await signed_in_to(stack)
        try:
            failed_page = "/console/hooks?status=failed"
            page = await console.get(failed_page)
            assert page.status_code == 200
            assert all(row.id in page.text for row in failed) and "Retry" in page.text
            assert "HTTP 500" in page.text
            first = failed[0]
            assert (await forged(console, f"/console/hooks/{first.id}/retry")).status_code == 403
            assert [r.status for r in await deliveries(stack) if r.id == first.id] == ["failed"]

            endpoint.fail_first = 0  # the merchant fixed their endpoint
            retry = f"/console/hooks/{first.id}/retry"
            answer = await console.submit(retry, {"back": failed_page}, token_from=failed_page)
            assert answer.status_code == 303 and answer.headers["location"] == "/console/hooks?status=failed"

            async def delivered() -> bool:
                return [r.status for r in await deliveries(stack) if r.id == first.id] == ["delivered"]

            await wait_until(delivered, what="the retried delivery")
            assert sum(1 for r in await deliveries(stack) if r.status == "failed") == len(failed) - 1
            again = await console.submit(retry, token_from=failed_page)
            assert again.status_code == 409  # it is not failed now
            # One entry: the refused retry (and the forged one) recorded nothing.
            assert await console_trail(stack, first.id) == [("Alice", "127.0.0.1", "hook.retry", None)]
            shown = await console.get("/console/hooks", params={"status": "delivered"})
            assert first.id in shown.text
            assert (await console.get("/console/hooks", params={"status": "lost"})).status_code == 400
        finally:
            await console.aclose()
