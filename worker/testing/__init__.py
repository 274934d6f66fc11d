"""The test kit for merchants' handlers (docs/testing.md).

The pytest plugin (`worker.testing.plugin`, loaded through the `pytest11` entry point) gives the
`dodo` fixture; this module gives the pieces for unit tests that call a handler directly:

    from worker.testing import make_event, sign

    event = make_event("payment.succeeded", metadata={"order_id": "ord_1"})
    headers = sign(body)  # Standard Webhooks headers, with TEST_SECRET unless told

Imports stay light here: the plugin imports this package in every pytest run.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datetime import datetime

    from worker.events import Event

# The webhook secret `sign` uses by default, and the one the `dodo` fixture's receiver accepts
# unless `dodo_settings` names another (a fixed, public test value: never use it in production).
TEST_SECRET = "whsec_ZG9kby13b3JrZXItdGVzdC1raXQtc2VjcmV0LTAwMDA="  # noqa: S105 - public, for tests


def deep_merge(base: Any, changes: Any) -> Any:
    """`changes` over `base`: dicts merged key by key (recursively), anything else replaced
    (lists too: a new `product_cart` is the whole cart). Neither argument is modified."""
    if not isinstance(base, dict) or not isinstance(changes, dict):
        return copy.deepcopy(changes)
    merged = copy.deepcopy(base)
    for key, value in changes.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else copy.deepcopy(value)
    return merged


def envelope(event_type: str, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundled sample of `event_type` (any type the pinned SDK defines), stamped now, with
    `data` merged into its `data` deeply. An unknown type gets an empty sample."""
    from worker.samples import stamped_sample

    try:
        body = stamped_sample(event_type)
    except KeyError:
        body = {"business_id": "bus_test", "type": event_type, "data": {}}
        body["timestamp"] = stamped_sample("payment.succeeded")["timestamp"]
    body["type"] = event_type
    body["data"] = deep_merge(body.get("data") or {}, data or {})
    return body


def make_event(event_type: str, *, id: str | None = None, data: dict[str, Any] | None = None,
               **overrides: Any) -> Event:
    """A `worker.events.Event` as a handler receives it: the sample of `event_type` with `data`
    and then `overrides` (fields of `data`) merged in deeply."""
    from worker.events import Event
    from worker.signing import new_message_id

    body = envelope(event_type, deep_merge(data or {}, overrides))
    return Event.from_envelope(id or new_message_id(), body)


def sign(body: bytes | str | dict[str, Any], secret: str | None = None, id: str | None = None,
         timestamp: datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
    `content-type`) for `body` as Dodo would send it. A dict is serialised with `json.dumps`:
    send exactly those bytes. `secret` defaults to TEST_SECRET, `timestamp` to now (an old one
    tests the receiver's replay window)."""
    from worker.signing import signed_headers

    raw = json.dumps(body) if isinstance(body, dict) else body
    return signed_headers(secret or TEST_SECRET, raw, id, timestamp)


__all__ = ["TEST_SECRET", "deep_merge", "envelope", "make_event", "sign"]
