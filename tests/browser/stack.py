"""The browser tests' stack: real `dodo-worker web` and `dodo-worker worker` processes (the fault
suite's `FaultStack`), the console enabled, the built-in entitlements with a catalog, a handler
of the test's own that fails while told to (console_handlers.py), a merchant's hook endpoint and
the fake Dodo API (both served in the test's event loop), on a database and queue of its own.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.entitlements.conftest import GUIDE_BYTES, payment
from tests.faults.procs import FaultStack
from tests.support import wait_until
from worker.entitlements.models import DeliveryRow
from worker.signing import generate_secret
from worker.store import EventRow

PASSWORD = "correct horse battery staple"
OPERATOR = "Grace (support)"
PRODUCT = "pdt_console_pro"  # a licence key (2 activations) and a file
HOOKED = "pdt_console_hooked"  # a licence key whose grant changes are told to the merchant's hook
CATALOG = f"""
[products.{PRODUCT}]
name = "Acme Pro"
license_key = {{ activations_limit = 2, prefix = "ACME" }}
files = ["files/guide.pdf"]

[products.{HOOKED}]
name = "Acme Hooked"
license_key = {{ activations_limit = 1 }}
hooks = ["{{hook_url}}"]
"""


class ConsoleStack(FaultStack):
    """Processes and helpers for the console's browser tests."""

    def __init__(self, tmp: Path, database_url: str, redis_url: str, *, hook_url: str, dodo_url: str,
                 dodo_api_key: str) -> None:
        (tmp / "files").mkdir(parents=True, exist_ok=True)
        (tmp / "files" / "guide.pdf").write_bytes(GUIDE_BYTES)
        (tmp / "entitlements.toml").write_text(CATALOG.replace("{hook_url}", hook_url))
        self.broken_dir = tmp / "broken"
        self.broken_dir.mkdir(exist_ok=True)
        super().__init__(
            tmp, database_url, redis_url,
            HANDLER_MODULES="tests.browser.console_handlers,handlers.entitlements",
            ENTITLEMENTS_FILE=tmp / "entitlements.toml",
            CONSOLE_TEST_BROKEN_DIR=self.broken_dir,
            CONSOLE_PASSWORD=PASSWORD,
            MAX_ATTEMPTS=2,
            RETRY_BASE_SECONDS=0.05,
            RETRY_MAX_SECONDS=0.2,
            HOOKS_SIGNING_KEY=generate_secret(),
            HOOKS_ALLOW_PRIVATE_NETWORKS="true",
            HOOKS_ALLOW_HTTP="true",
            HOOKS_RETRY_BASE_SECONDS=0.2,
            HOOKS_RETRY_MAX_SECONDS=0.5,
            HOOKS_GIVE_UP_HOURS=0.0005,  # 1.8 s: a delivery to a failing endpoint soon gives up
            DODO_PAYMENTS_API_KEY=dodo_api_key,
            DODO_PAYMENTS_BASE_URL=dodo_url,
        )
        self.env["PUBLIC_URL"] = self.base_url

    async def start(self) -> None:
        await self.start_web()
        await self.start_worker()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    # sending -----------------------------------------------------------------------------
    async def pay(self, *, email: str, product: str = PRODUCT, broken: bool = False,
                  metadata: dict[str, Any] | None = None) -> tuple[str, str, str]:
        """A signed `payment.succeeded` from a new customer with `email`, as Dodo sends it; with
        `broken`, the test's handler fails on it until `fix`. Returns (event id, payment id,
        customer id)."""
        token = uuid.uuid4().hex[:10]
        payment_id, customer_id, event_id = f"pay_{token}", f"cus_{token}", f"msg_{token}"
        if broken:
            (self.broken_dir / payment_id).write_text("the mail server is down")
        data = payment(payment_id, [(product, 1)], customer_id=customer_id, email=email,
                       metadata=metadata if metadata is not None else {"order_id": f"ord_{token}"})
        body = json.dumps({"business_id": "bus_console", "type": "payment.succeeded",
                           "timestamp": "2026-12-01T10:00:00Z", "data": data}).encode()
        response = await self.post(body, self.signed(body, event_id))
        assert response.status_code == 200, response.text
        return event_id, payment_id, customer_id

    def fix(self, payment_id: str) -> None:
        """The merchant's fix is deployed: the handler no longer fails on this payment."""
        (self.broken_dir / payment_id).unlink()

    # reading -----------------------------------------------------------------------------
    async def status(self, event_id: str) -> str | None:
        async with self.db.sessions() as session:
            row = await session.get(EventRow, event_id)
            return None if row is None else str(row.status)

    async def wait_status(self, event_id: str, status: str, timeout: float = 30.0) -> None:
        async def reached() -> bool:
            return await self.status(event_id) == status

        try:
            await wait_until(reached, timeout, what=f"event {event_id} to be {status}")
        except AssertionError:
            raise AssertionError(f"event {event_id} is {await self.status(event_id)}\n{self.logs()}") from None

    async def delivery_statuses(self, grant_ids: set[str] | None = None) -> list[str]:
        async with self.db.sessions() as session:
            rows = await session.scalars(select(DeliveryRow))
            return [str(r.status) for r in rows if grant_ids is None or r.grant_id in grant_ids]
