"""The handler module the browser tests' worker process loads (HANDLER_MODULES), beside the
built-in entitlement handlers.

`send_welcome_mail` stands for a merchant's handler with a bug that a fix later mends: it raises
for a payment while a file named after the payment exists in CONSOLE_TEST_BROKEN_DIR, so a test
makes an event go dead, "fixes" it by deleting the file, and replays it from the console.
"""

from __future__ import annotations

import os
from pathlib import Path

from worker import Context, Event, on


class MailServerError(RuntimeError):
    """What the merchant's mail provider answered."""


@on("payment.succeeded")
async def send_welcome_mail(event: Event, ctx: Context) -> None:
    payment_id = str(event.data.get("payment_id"))
    if (Path(os.environ["CONSOLE_TEST_BROKEN_DIR"]) / payment_id).exists():
        raise MailServerError(f"the mail server said no to {payment_id}")
