"""Subscription events older than what their grants already follow change nothing, and say so on
the event and in the log; the bundled samples, sent with `dodo-worker send` in their natural
order, take a subscription's licence key from active to revoked."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.entitlements import conftest as entitlement_fixtures
from tests.support import Stack
from worker.samples import load_sample, stamped_sample
from worker.store import EventStatus

SAMPLE = load_sample("subscription.active")["data"]
SUB, PRODUCT = SAMPLE["subscription_id"], SAMPLE["product_id"]
HANDLER = "entitlements.subscription"


registry = entitlement_fixtures.registry  # the built-in entitlement handlers, as with a catalog


@pytest.fixture
async def sub_stack(stack_factory: Any, tmp_path: Path) -> Stack:
    """A running stack whose catalog grants a licence key for the samples' subscription product."""
    catalog = tmp_path / "entitlements.toml"
    catalog.write_text(f"[products.{PRODUCT}]\nlicense_key = {{ activations_limit = 2 }}\n")
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog))
    return stack


async def _cli_json(stack: Stack, *args: str) -> Any:
    code, out, err = await stack.cli(*args, "--json")
    assert code == 0, err
    return json.loads(out)


async def _send_sample(stack: Stack, event_type: str, at: datetime) -> str:
    event_id, response = await stack.send(event_type, envelope=stamped_sample(event_type, at))
    assert response.status_code == 200, response.text
    await stack.wait_status(event_id, EventStatus.PROCESSED)
    return event_id


def _subscription_handler(shown: dict[str, Any]) -> dict[str, Any]:
    return next(h for h in shown["handlers"] if h["name"] == HANDLER)


async def _key_status(stack: Stack) -> str:
    grants = await _cli_json(stack, "grants", "list", "--subscription-id", SUB)
    keys = [g for g in grants if g["kind"] == "license_key"]
    assert len(keys) == 1, grants
    return str(keys[0]["status"])


async def test_bundled_samples_sent_active_on_hold_renewed_cancelled_end_revoked(sub_stack: Stack) -> None:
    url = f"{sub_stack.base_url}/webhooks/dodo"
    ids = []
    for event_type in ("subscription.active", "subscription.on_hold", "subscription.renewed",
                       "subscription.cancelled"):
        sent = await _cli_json(sub_stack, "send", event_type, "--url", url)
        assert sent["status_code"] == 200, sent
        ids.append(sent["id"])
    for event_id in ids:
        await sub_stack.wait_status(event_id, EventStatus.PROCESSED)

    assert await _key_status(sub_stack) == "revoked"
    for event_id in ids:  # each one applied: none was skipped as stale
        handler = _subscription_handler(await _cli_json(sub_stack, "events", "show", event_id))
        assert handler["status"] == "succeeded" and handler["note"] is None, handler


async def test_an_older_event_after_a_newer_one_is_recorded_as_stale(sub_stack: Stack,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="dodo_worker.events")
    newer = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    older = newer - timedelta(hours=3)
    await _send_sample(sub_stack, "subscription.active", newer)
    late = await _send_sample(sub_stack, "subscription.on_hold", older)

    assert await _key_status(sub_stack) == "active", "the older on_hold suspends nothing"
    handler = _subscription_handler(await _cli_json(sub_stack, "events", "show", late))
    note = handler["note"]
    assert note is not None and note.startswith(f"stale: subscription {SUB} changed at ")
    assert newer.isoformat() in note and older.isoformat() in note
    assert handler["status"] == "succeeded"
    assert [run["note"] for run in handler["runs"]] == [note]

    code, _, err = await sub_stack.cli("events", "show", late)
    assert code == 0 and f"note: stale: subscription {SUB}" in err.replace("\n", " ")
    logged = [r.getMessage() for r in caplog.records if "stale: subscription" in r.getMessage()]
    assert len(logged) == 1 and late in logged[0], logged


async def test_an_event_after_a_cancellation_says_the_key_stays_revoked(sub_stack: Stack) -> None:
    start = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    await _send_sample(sub_stack, "subscription.active", start)
    await _send_sample(sub_stack, "subscription.cancelled", start + timedelta(hours=1))
    after = await _send_sample(sub_stack, "subscription.renewed", start + timedelta(hours=2))

    assert await _key_status(sub_stack) == "revoked"
    note = _subscription_handler(await _cli_json(sub_stack, "events", "show", after))["note"]
    assert note is not None and "stays revoked" in note and "grants restore" in note, note
