"""A signed webhook goes in, every matching handler runs once, and the record says so."""

from __future__ import annotations

import json

from worker import Context, Event
from worker.registry import Registry


async def test_valid_event_is_stored_processed_and_shown(stack_factory, registry: Registry) -> None:
    seen: list[tuple[str, str | None, str]] = []

    @registry.on("payment.succeeded")
    async def grant(event: Event, ctx: Context) -> None:
        seen.append((event.id, event.data.get("payment_id"), ctx.idempotency_key))

    @registry.on("payment.*")
    async def audit(event: Event, ctx: Context) -> None:
        seen.append((event.id, event.type, ctx.idempotency_key))

    stack = await stack_factory()
    event_id, response = await stack.send("payment.succeeded")
    assert response.status_code == 200
    assert response.json() == {"status": "accepted"}

    await stack.wait_status(event_id, "processed")
    assert sorted(seen) == sorted([
        (event_id, "pay_2IjeQm4hqU6RA4Z4kwDee", f"{event_id}:{grant.__module__}.{grant.__qualname__}"),
        (event_id, "payment.succeeded", f"{event_id}:{audit.__module__}.{audit.__qualname__}"),
    ])

    code, out, _ = await stack.cli("events", "show", event_id, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["id"] == event_id
    assert shown["type"] == "payment.succeeded"
    assert shown["status"] == "processed"
    assert shown["source"] == "webhook"
    assert shown["attempts"] == 1
    assert shown["received_at"]
    assert {(h["name"].rsplit(".", 1)[-1], h["status"], h["attempts"], h["error"]) for h in shown["handlers"]} == {
        ("grant", "succeeded", 1, None),
        ("audit", "succeeded", 1, None),
    }
