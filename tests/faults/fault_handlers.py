"""The handler module the fault suite's worker processes load (HANDLER_MODULES).

`grant_access` stands for any effect that must happen exactly once per order: it inserts one
row per payment into `fault_grants`, whose primary key is the payment id. The INSERT is not
`ON CONFLICT DO NOTHING` on purpose: if the framework ever ran the handler again after its
effect had committed, the second run would fail on the key and the event would end `failed`
or `dead`, which the tests check never happens.

Environment knobs: FAULT_HANDLER_SECONDS (sleep before the effect, to have work in flight when
a process is killed), FAULT_FIX_FILE (payments named `pay_poison*` raise until this file exists).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from sqlalchemy import text

from worker import Context, Event, on

INSERT = text("INSERT INTO fault_grants (payment_id, event_id, pid) VALUES (:payment_id, :event_id, :pid)")


class PoisonError(RuntimeError):
    """A bug in a handler that only one kind of event triggers."""


@on("payment.succeeded")
async def grant_access(event: Event, ctx: Context) -> None:
    payment_id = str(event.data.get("payment_id"))
    fixed = Path(os.environ.get("FAULT_FIX_FILE", "/nonexistent")).exists()
    if payment_id.startswith("pay_poison") and not fixed:
        raise PoisonError(f"cannot handle {payment_id}")
    delay = float(os.environ.get("FAULT_HANDLER_SECONDS", "0"))
    if delay:
        await asyncio.sleep(delay)
    await ctx.session.execute(INSERT, {"payment_id": payment_id, "event_id": event.id, "pid": os.getpid()})
