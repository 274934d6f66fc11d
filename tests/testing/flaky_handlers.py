"""A merchant's handler module for tests/testing/test_kit_api.py: fails until told otherwise."""

from __future__ import annotations

from worker import Context, Event, on

STATE = {"fail": True}


@on("dispute.opened", name="kit_tests.flaky")
async def flaky(event: Event, ctx: Context) -> None:
    if STATE["fail"]:
        raise RuntimeError("the CRM is down")
    ctx.note("synced")
