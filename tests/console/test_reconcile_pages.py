"""The console's reconciliation page: a dry run reports a missed payment without repairing it;
"Run now" repairs it (the payment's grants appear) and the run's report says so."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.console.test_grants_pages import (
    act,
    forged,
    signed_in_to,
    stack_with_console,
)
from tests.entitlements.conftest import PRODUCT, catalog_path, entitlements, registry
from tests.reconcile.conftest import FakeApi, fake_dodo, stack_factory
from tests.support import Stack, wait_until
from worker.reconcile.models import ReconcileRunRow
from worker.reconcile.sources import synthetic_event_id
from worker.testing.fakedodo import data

__all__ = ["catalog_path", "fake_dodo", "registry", "stack_factory"]  # fixtures used here

DAILY = {"RECONCILE_INTERVAL_MINUTES": 1440}  # no scheduled scan during the test but the start-up one
PAGE = "/console/reconcile"


async def test_dry_run_reports_and_run_now_repairs(stack_factory: Any, catalog_path: Path, fake_dodo: FakeApi) -> None:
    stack = await stack_with_console(stack_factory, catalog_path, **DAILY, **fake_dodo.env)
    # The worker's start-up scan finds nothing; the payment its webhook never brought comes after.
    await wait_until(lambda: _ended(stack, ["ok"]), what="the worker's start-up scan")
    missed = fake_dodo.fake.add("payments", data.payment(7, created_at=datetime.now(UTC) - timedelta(minutes=10),
                                                    product_id=PRODUCT))
    payment_id = missed["payment_id"]
    console = await signed_in_to(stack)
    try:
        page = await console.get(PAGE)
        assert "Dry run" in page.text and "Run now" in page.text
        assert (await console.get("/console/reconciliation")).status_code == 200  # the nav's path
        assert (await forged(console, "/console/reconcile/run")).status_code == 403
        assert await _ended(stack, ["ok"])  # no scan started

        await act(console, "/console/reconcile/dry-run", PAGE)

        async def dry_run_done() -> str | None:
            text = (await console.get(PAGE)).text
            return text if "dry-run-ok" in text else None

        shown = await wait_until(dry_run_done, what="the dry run's report")
        assert "would repair 1" in shown
        assert payment_id in shown
        assert await stack.event(synthetic_event_id("payment.succeeded", payment_id)) is None
        assert await entitlements(stack, payment_id=payment_id) == []

        await act(console, "/console/reconcile/run", PAGE)
        event_id = synthetic_event_id("payment.succeeded", payment_id)
        await stack.wait_status(event_id, "processed")
        assert {g["status"] for g in await entitlements(stack, payment_id=payment_id)} == {"active"}

        await wait_until(lambda: _ended(stack, ["ok", "ok"]), what="the console's run to end")
        report = (await console.get(PAGE)).text
        assert ">console<" in report
        assert "repaired 1" in report and event_id in report
    finally:
        await console.aclose()


async def _ended(stack: Stack, statuses: list[str]) -> bool:
    async with stack.db.sessions() as session:
        return list(await session.scalars(select(ReconcileRunRow.status).order_by(ReconcileRunRow.id))) == statuses


async def test_without_an_api_key_the_page_says_so_and_starts_nothing(stack_factory: Any, catalog_path: Path) -> None:
    stack = await stack_with_console(stack_factory, catalog_path, worker=False)
    console = await signed_in_to(stack)
    try:
        page = await console.get(PAGE)
        assert "Reconciliation is disabled" in page.text and "DODO_PAYMENTS_API_KEY" in page.text
        answer = await console.submit("/console/reconcile/run", token_from=PAGE)
        assert answer.status_code == 409
        assert await _ended(stack, [])
    finally:
        await console.aclose()
