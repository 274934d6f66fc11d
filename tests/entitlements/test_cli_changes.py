"""A grant changed by hand from a support shell is told like any other change: the shell needs
neither HOOKS_SIGNING_KEY, nor HANDLER_MODULES, nor the catalog, because the worker (which has
them) expands the change into its hook deliveries, signs and sends them, and calls the Python
hooks, once per change."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from standardwebhooks import Webhook

from tests.entitlements.conftest import PRODUCT, entitlements, payment, send_and_wait, write_catalog
from tests.entitlements.receiver import HookEndpoint, Received, serve
from tests.support import Stack, wait_until
from worker.entitlements import hooks as python_hooks
from worker.entitlements.delivery import expand_due
from worker.entitlements.models import DeliveryRow
from worker.entitlements.outbox import EXPANDED, FAN_OUT
from worker.entitlements.sender import deliver_due
from worker.settings import Settings
from worker.signing import generate_secret

CLI = str(Path(sys.executable).parent / "dodo-worker")


async def bare_shell(cwd: Path, database_url: str, *args: str) -> tuple[int, str, str]:
    """`dodo-worker ARGS` in a subprocess whose environment names the database and nothing else
    of dodo-worker's (no signing key, no handler modules, no catalog), run in an empty folder."""
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env["DATABASE_URL"] = database_url
    cwd.mkdir(exist_ok=True)
    proc = await asyncio.create_subprocess_exec(CLI, *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def deliveries(stack: Stack, grant_id: str) -> list[DeliveryRow]:
    async with stack.db.sessions() as session:
        return list(await session.scalars(
            select(DeliveryRow).where(DeliveryRow.grant_id == grant_id).order_by(DeliveryRow.created_at)))


def calls_of(endpoint: HookEndpoint, event_type: str, grant_id: str) -> list[Received]:
    return [c for c in endpoint.delivered()
            if json.loads(c.body)["type"] == event_type and json.loads(c.body)["data"]["id"] == grant_id]


async def test_revoke_from_a_shell_without_the_key_reaches_the_hook_and_the_python_hook(
        stack_factory: Any, tmp_path: Path) -> None:
    heard: list[tuple[str, str, str]] = []

    @python_hooks.on_entitlement("entitlement.revoked")
    async def tell_crm(event_type: str, grant: dict[str, Any]) -> None:
        heard.append((event_type, grant["id"], grant["status"]))

    endpoint = HookEndpoint()
    try:
        async with serve(endpoint) as base:
            catalog = write_catalog(tmp_path / "worker", hooks=[f"{base}/provision?token=s3cret"])
            stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog), HOOKS_SIGNING_KEY=generate_secret(),
                                               HOOKS_ALLOW_PRIVATE_NETWORKS=True, HOOKS_ALLOW_HTTP=True)
            await send_and_wait(stack, "payment.succeeded", payment("pay_shell", [(PRODUCT, 1)]))
            key = next(g for g in await entitlements(stack, payment_id="pay_shell") if g["kind"] == "license_key")
            await wait_until(lambda: _true(calls_of(endpoint, "entitlement.granted", key["id"])),
                             what="the grant's own hook call")

            code, out, err = await bare_shell(tmp_path / "support", stack.settings.DATABASE_URL,
                                              "grants", "revoke", key["id"][:12], "--reason", "ticket 7", "--json")
            assert code == 0, err
            assert json.loads(out)["status"] == "revoked"

            [call] = await wait_until(lambda: _true(calls_of(endpoint, "entitlement.revoked", key["id"])),
                                      what="entitlement.revoked at the hook endpoint")
            await wait_until(lambda: _true(heard), what="the Python hook to hear the revoke")
            runtime = stack.worker_runtime
            # Once per change: expanding the CLI's row again (a worker that died before its
            # commit would) writes nothing new, and a whole delivery pass tells no one twice.
            async with stack.db.sessions() as session, session.begin():
                await session.execute(update(DeliveryRow).where(DeliveryRow.target == FAN_OUT)
                                      .values(status="pending"))
            before = len(await deliveries(stack, key["id"]))
            # The running worker's own delivery pass (every second) may expand it first: either
            # way it is expanded again once, and that adds no delivery.
            await expand_due(runtime)

            async def expanded_again() -> bool:
                async with stack.db.sessions() as session:
                    statuses = (await session.scalars(select(DeliveryRow.status)
                                                      .where(DeliveryRow.target == FAN_OUT))).all()
                return bool(statuses) and all(status == EXPANDED for status in statuses)

            await wait_until(expanded_again, what="the fan-out row expanded again")
            await deliver_due(runtime)
            assert len(await deliveries(stack, key["id"])) == before
    finally:
        python_hooks.remove(f"{tell_crm.__module__}.{tell_crm.__qualname__}")

    assert stack.settings.HOOKS_SIGNING_KEY is not None
    body = Webhook(stack.settings.HOOKS_SIGNING_KEY.get_secret_value()).verify(call.body, call.headers)
    assert call.path == "/provision"
    assert (body["data"]["id"], body["data"]["status"], body["data"]["status_reason"]) == (key["id"], "revoked",
                                                                                           "manual")
    assert heard == [("entitlement.revoked", key["id"], "revoked")]
    assert len(calls_of(endpoint, "entitlement.revoked", key["id"])) == 1
    rows = await deliveries(stack, key["id"])
    revoked = {r.target: r.status for r in rows if r.event_type == "entitlement.revoked"}
    assert revoked == {FAN_OUT: EXPANDED, f"{base}/provision?token=s3cret": "delivered",
                       f"python:{tell_crm.__module__}.{tell_crm.__qualname__}": "delivered"}

    # Support sees, from the same shell, that the hook was told (the URL without its query).
    code, out, err = await bare_shell(tmp_path / "support", stack.settings.DATABASE_URL,
                                      "grants", "show", key["id"], "--json")
    assert code == 0, err
    told = {(d["event_type"], d["target"], d["status"]) for d in json.loads(out)["deliveries"]}
    assert ("entitlement.revoked", f"{base}/provision", "delivered") in told
    assert "s3cret" not in out


async def test_restore_from_a_shell_is_told_after_the_revoke(stack_factory: Any, tmp_path: Path) -> None:
    """Two changes by hand reach the hook in the order they were made."""
    endpoint = HookEndpoint()
    async with serve(endpoint) as base:
        catalog = write_catalog(tmp_path / "worker", hooks=[f"{base}/provision"])
        stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog), HOOKS_SIGNING_KEY=generate_secret(),
                                           HOOKS_ALLOW_PRIVATE_NETWORKS=True, HOOKS_ALLOW_HTTP=True)
        await send_and_wait(stack, "payment.succeeded", payment("pay_again", [(PRODUCT, 1)]))
        [file_grant] = [g for g in await entitlements(stack, payment_id="pay_again") if g["kind"] == "file"]
        await wait_until(lambda: _true(calls_of(endpoint, "entitlement.granted", file_grant["id"])),
                         what="the grant's hook call")
        await stack.stop_worker()  # both changes wait in the outbox until a worker runs
        for action in ("revoke", "restore"):
            code, _, err = await bare_shell(tmp_path / "support", stack.settings.DATABASE_URL,
                                            "grants", action, file_grant["id"])
            assert code == 0, err
        await stack.start_worker()

        async def told() -> list[str] | None:
            seen = [json.loads(c.body)["type"] for c in endpoint.delivered()
                    if json.loads(c.body)["data"]["id"] == file_grant["id"]]
            return seen if len(seen) == 3 else None

        seen = await wait_until(told, what="granted, revoked and granted again")
    assert seen == ["entitlement.granted", "entitlement.revoked", "entitlement.granted"]


async def _true(items: list[Any]) -> list[Any] | None:
    return items or None
