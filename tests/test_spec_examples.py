"""Every webhook example in Dodo's published OpenAPI spec is accepted, stored and settled."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import yaml

from tests.dodo_spec import SPEC
from worker import Context, Event
from worker.events import PAYLOAD_MODELS
from worker.registry import Registry
from worker.store import EventStatus


@cache
def spec_examples() -> dict[str, dict[str, Any]]:
    spec = yaml.safe_load(SPEC.read_text())
    examples = {}
    for name, item in spec["x-webhooks"].items():
        example = item["post"]["requestBody"]["content"]["application/json"]["example"]
        examples[name] = example
    return examples


async def test_every_spec_example_is_accepted_and_settled(stack_factory, registry: Registry) -> None:
    seen: dict[str, Event] = {}

    @registry.on("*")
    async def record(event: Event, ctx: Context) -> None:
        seen[event.type] = event

    stack = await stack_factory()
    examples = spec_examples()
    assert len(examples) >= 20
    ids = {}
    for name, example in examples.items():
        event_id, response = await stack.send(example["type"], envelope=example)
        assert response.status_code == 200, (name, response.text)
        assert response.json() == {"status": "accepted"}
        ids[name] = event_id
    for event_id in ids.values():
        await stack.wait_status(event_id, EventStatus.PROCESSED)
    assert set(seen) == {e["type"] for e in examples.values()}
    for event_type, event in seen.items():
        model = PAYLOAD_MODELS.get(event_type.split(".")[0])
        assert model is not None and isinstance(event.data, model), f"{event_type} got the typed payload"
    payment = seen["payment.succeeded"].data
    assert payment.get("payment_id") and payment.get("customer").get("email")
    assert seen["subscription.active"].data.get("subscription_id")


def test_spec_examples_keep_unknown_fields() -> None:
    example = spec_examples()["payment.succeeded"]
    data = dict(example["data"], a_field_from_the_future={"x": 1})
    event = Event.from_envelope("msg_1", {**example, "data": data})
    assert event.data.get("a_field_from_the_future") == {"x": 1}
    assert json.loads(event.data.model_dump_json())["a_field_from_the_future"] == {"x": 1}
