"""Alerts for hook deliveries that give up and for scheduled reconciliation scans, through the
real stack: a local Slack-compatible receiver counts one message per incident."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.entitlements.conftest import PRODUCT, catalog_path, payment, registry, send_and_wait  # noqa: F401
from tests.entitlements.receiver import HookEndpoint, serve
from tests.entitlements.test_hooks import FAST_RETRIES, deliveries, hook_stack
from tests.support import Stack, wait_until
from worker.alerts import alerter
from worker.reconcile.job import RESOURCE
from worker.reconcile.models import ReconcileRunRow
from worker.testing.fakedodo import FakeDodo
from worker.testing.fakedodo import serve as serve_dodo
from worker.testing.fakedodo.data import populate


def texts(receiver: HookEndpoint) -> list[str]:
    return [json.loads(call.body)["text"] for call in receiver.calls]


async def test_a_hook_endpoint_that_keeps_failing_is_one_message_until_it_delivers(
        stack_factory: Any, tmp_path: Path) -> None:
    endpoint, receiver = HookEndpoint(fail_first=1_000), HookEndpoint(status=200)
    async with serve(endpoint) as base, serve(receiver) as alerts_base:
        stack = await hook_stack(stack_factory, tmp_path, f"{base}/provision?token=s3cret",
                                 HOOKS_ALLOW_PRIVATE_NETWORKS=True, HOOKS_ALLOW_HTTP=True,
                                 HOOKS_GIVE_UP_HOURS=1.0 / 3600,
                                 ALERT_WEBHOOK_URL=f"{alerts_base}/hook", ALERT_CHECK_SECONDS=1, **FAST_RETRIES)
        await send_and_wait(stack, "payment.succeeded", payment("pay_down", [(PRODUCT, 1)]))

        async def all_failed() -> bool:
            rows = await deliveries(stack)
            return len(rows) == 3 and all(r.status == "failed" for r in rows)

        await wait_until(all_failed, what="the deliveries to give up")
        await alerter(stack.worker_runtime).drain()
        [text] = texts(receiver)  # three deliveries gave up, to one endpoint: one incident
        assert f"{base}/provision" in text and "hooks retry --failed" in text and "s3cret" not in text

        endpoint.fail_first = 0
        code, _, err = await stack.cli("hooks", "retry", "--failed")
        assert code == 0, err

        async def delivered() -> bool:
            return all(r.status == "delivered" for r in await deliveries(stack))

        await wait_until(delivered, what="the retried deliveries")
        await alerter(stack.worker_runtime).drain()
        assert await alerter(stack.worker_runtime).incidents.all_open() == []
        assert len(texts(receiver)) == 1  # quiet when resolved


async def runs(stack: Stack) -> list[ReconcileRunRow]:
    from sqlalchemy import select

    async with stack.db.sessions() as session:
        return list(await session.scalars(select(ReconcileRunRow).order_by(ReconcileRunRow.id)))


async def test_a_scan_that_repairs_and_one_that_fails_each_alert_once(stack_factory: Any) -> None:
    fake = FakeDodo()
    receiver = HookEndpoint(status=200)
    populate(fake, payments=3)
    async with serve_dodo(fake) as dodo_url, serve(receiver) as alerts_base:
        stack = await stack_factory(web=False, RECONCILE_INTERVAL_MINUTES=1440, ALERT_WEBHOOK_URL=f"{alerts_base}/h",
                                    DODO_PAYMENTS_API_KEY=fake.api_key, DODO_PAYMENTS_BASE_URL=dodo_url)
        reconciler = stack.worker_runtime.resources[RESOURCE]

        async def finished(n: int) -> bool:
            done = [r for r in await runs(stack) if r.status in ("ok", "failed")]
            return len(done) >= n and not reconciler.running

        await wait_until(lambda: finished(1), what="the start-up scan")
        await alerter(stack.worker_runtime).drain()
        [text] = texts(receiver)
        assert "repaired 3 object(s)" in text and fake.api_key not in text

        assert await reconciler.start("test") == "started"  # nothing left to repair: resolved, quietly
        await wait_until(lambda: finished(2), what="the second scan")
        await alerter(stack.worker_runtime).drain()
        assert len(texts(receiver)) == 1 and await alerter(stack.worker_runtime).incidents.all_open() == []

        fake.fail_next(1_000, status=401)
        for n in (3, 4):  # two failing scans: one incident
            assert await reconciler.start("test") == "started"
            await wait_until(lambda n=n: finished(n), what="a failing scan")
            await alerter(stack.worker_runtime).drain()
        assert [r.status for r in await runs(stack)][-2:] == ["failed", "failed"]
        assert len(texts(receiver)) == 2
        assert "reconciliation failed" in texts(receiver)[1] and fake.api_key not in texts(receiver)[1]
