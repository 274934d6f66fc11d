"""The bundled samples cover every webhook type the pinned `dodopayments` SDK defines, each one
valid for the SDK's own model and typed by `worker.events`; and every one goes through the stack."""

from __future__ import annotations

import json
import re
import typing
from datetime import UTC, datetime, timedelta
from typing import Any

import pydantic
import pytest
from dodopayments.types import WebhookEventType
from dodopayments.types.unwrap_webhook_event import UnwrapWebhookEvent

from worker import Context, Event
from worker.events import PAYLOAD_MODELS, Payload, object_id, parse_payload
from worker.registry import Registry
from worker.samples import load_sample, sample_types, stamped_sample


def _sdk_models() -> dict[str, type[pydantic.BaseModel]]:
    """Each SDK event model by the one value of its `type` Literal, from the union itself."""
    union = typing.get_args(UnwrapWebhookEvent)[0]  # Annotated[Union[...], PropertyInfo]
    models: dict[str, type[pydantic.BaseModel]] = {}
    for model in typing.get_args(union):
        (event_type,) = typing.get_args(model.model_fields["type"].annotation)
        models[event_type] = model
    return models


SDK_MODELS = _sdk_models()
SDK_TYPES = sorted(SDK_MODELS)
ADAPTER: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(UnwrapWebhookEvent)


def test_the_sdk_union_is_read() -> None:
    assert len(SDK_TYPES) >= 48
    assert {"payment.succeeded", "payout.success", "credit.added", "entitlement_grant.revoked"} <= set(SDK_TYPES)


def test_the_union_agrees_with_the_sdks_list_of_types() -> None:
    assert set(SDK_TYPES) == set(typing.get_args(WebhookEventType))


def test_every_sdk_type_has_a_sample_and_every_sample_a_type() -> None:
    samples = set(sample_types())
    assert sorted(set(SDK_TYPES) - samples) == [], "SDK event types with no sample in worker/samples/"
    assert sorted(samples - set(SDK_TYPES)) == [], "samples for types the SDK does not define"


@pytest.mark.parametrize("event_type", SDK_TYPES)
def test_sample_validates_against_the_sdk_model(event_type: str) -> None:
    sample = load_sample(event_type)
    assert set(sample) == {"business_id", "type", "timestamp", "data"}
    assert sample["type"] == event_type
    parsed = ADAPTER.validate_python(sample)
    assert isinstance(parsed, SDK_MODELS[event_type])


@pytest.mark.parametrize("event_type", SDK_TYPES)
def test_the_sdk_check_fails_a_sample_missing_a_required_field(event_type: str) -> None:
    """The check above is strict: drop any field the SDK requires of `data` and it fails."""
    required = [name for name, field in _data_model(event_type).model_fields.items() if field.is_required()]
    assert required
    for name in required:
        sample = load_sample(event_type)
        del sample["data"][name]
        with pytest.raises(pydantic.ValidationError):
            ADAPTER.validate_python(sample)


def _data_model(event_type: str) -> type[pydantic.BaseModel]:
    """The SDK's model of `data` for `event_type` (the first, where `data` is a union)."""
    annotation = SDK_MODELS[event_type].model_fields["data"].annotation
    models = [annotation, *typing.get_args(annotation)]
    return next(m for m in models if isinstance(m, type) and issubclass(m, pydantic.BaseModel))


@pytest.mark.parametrize("event_type", SDK_TYPES)
def test_sample_gets_a_typed_payload(event_type: str) -> None:
    data = load_sample(event_type)["data"]
    payload = parse_payload(event_type, data)
    family = event_type.split(".", 1)[0]
    assert type(payload) is PAYLOAD_MODELS[family]
    assert type(payload) is not Payload
    assert object_id(event_type, data)


def test_a_payload_that_misfits_its_model_falls_back_to_the_untyped_one() -> None:
    payload = parse_payload("payout.success", {"payout_id": ["not", "a", "string"], "amount": 5})
    assert type(payload) is Payload
    assert payload.get("amount") == 5


ODD_DATA: list[Any] = [None, "text", 7, [1, 2], {}, {"customer": "cus_1", "created_at": "yesterday"},
                      {"product_cart": [1], "license_key": [], "metadata": "none", "amount": {"v": 1}}]


@pytest.mark.parametrize("family", sorted(PAYLOAD_MODELS))
@pytest.mark.parametrize("data", ODD_DATA)
def test_odd_data_never_raises(family: str, data: Any) -> None:
    event = Event.from_envelope("msg_odd", {"type": f"{family}.anything", "data": data})
    assert isinstance(event.data, Payload)
    if isinstance(data, dict):
        assert {key: event.data.get(key) for key in data} == data


def test_object_ids_of_the_new_families() -> None:
    assert object_id("payout.created", load_sample("payout.created")["data"]) == "pout_4WqZ8hNcY2Lk7PbR1sTvA"
    assert object_id("credit.added", load_sample("credit.added")["data"]).startswith("cle_")  # type: ignore[union-attr]
    assert object_id("credit.balance_low", load_sample("credit.balance_low")["data"]).startswith("cde_")  # type: ignore[union-attr]
    assert object_id("dunning.started", {"subscription_id": "sub_1"}) == "sub_1"
    assert object_id("abandoned_checkout.detected", {"payment_id": "pay_1"}) == "pay_1"
    assert object_id("entitlement_grant.created", {"id": "egr_1"}) == "egr_1"


def test_stamped_sample_sets_the_timestamp_to_now() -> None:
    now = datetime(2027, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    sample = stamped_sample("payment.succeeded", now=now)
    assert sample["timestamp"] == "2027-01-02T03:04:05.678901Z"
    assert sample["data"] == load_sample("payment.succeeded")["data"]
    assert isinstance(ADAPTER.validate_python(sample), SDK_MODELS["payment.succeeded"])
    fresh = datetime.fromisoformat(stamped_sample("refund.failed")["timestamp"])
    assert abs(fresh - datetime.now(UTC)) < timedelta(minutes=1)
    with pytest.raises(KeyError):
        stamped_sample("nope.never")


def test_send_help_lists_every_sample_type_within_80_columns() -> None:
    from typer.testing import CliRunner

    from worker.cli.main import app

    result = CliRunner().invoke(app, ["send", "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80
    listed: set[str] = set()
    family = None
    for line in result.output.splitlines():
        head = re.fullmatch(r"\s*([a-z_]+): ([a-z_, ]+)\s*", line)
        more = re.fullmatch(r"\s{4,}([a-z_, ]+)\s*", line)
        if head:
            family, names = head.groups()
        elif family and more:
            names = more.group(1)
        else:
            family = None
            continue
        listed |= {f"{family}.{name.strip()}" for name in names.split(",") if name.strip()}
    assert set(sample_types()) <= listed, sorted(set(sample_types()) - listed)


async def test_every_sample_is_stored_and_settles(stack: Any) -> None:
    sent: dict[str, str] = {}
    for event_type in sample_types():
        event_id, response = await stack.send(event_type)
        assert response.status_code == 200, (event_type, response.text)
        sent[event_type] = event_id
    for event_type, event_id in sent.items():
        row = await stack.wait_status(event_id, "processed", "ignored")
        assert row.type == event_type
        assert json.loads(row.body)["data"] == load_sample(event_type)["data"]


async def test_every_sample_reaches_a_catch_all_handler_typed(stack_factory: Any, registry: Registry) -> None:
    seen: dict[str, type[Payload]] = {}

    @registry.on("*")
    async def everything(event: Event, ctx: Context) -> None:
        seen[event.type] = type(event.data)

    stack = await stack_factory()
    sent = {event_type: (await stack.send(event_type))[0] for event_type in sample_types()}
    for event_id in sent.values():
        await stack.wait_status(event_id, "processed")
    assert seen == {event_type: PAYLOAD_MODELS[event_type.split(".", 1)[0]] for event_type in sent}


async def test_cli_send_stamps_the_sample_with_now(stack: Any) -> None:
    code, out, err = await stack.cli("send", "subscription.paused", "--url", f"{stack.base_url}/webhooks/dodo",
                                     "--json")
    assert code == 0, (out, err)
    result = json.loads(out)
    assert result["status_code"] == 200
    row = await stack.wait_status(result["id"], "processed", "ignored")
    stamped = datetime.fromisoformat(json.loads(row.body)["timestamp"])
    assert abs(stamped - datetime.now(UTC)) < timedelta(minutes=1)


async def test_cli_send_file_too_deep_for_python_still_reaches_the_receiver(stack: Any, tmp_path: Any) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text('{"type": "payment.succeeded", "data": ' + "[" * 100_000 + "]" * 100_000 + "}")
    code, out, err = await stack.cli("send", "payment.succeeded", "--url", f"{stack.base_url}/webhooks/dodo",
                                     "--file", str(deep), "--json")
    assert code == 1, (out, err)
    assert "Traceback" not in out + err
    assert json.loads(out)["status_code"] == 400
    assert "sending it unchanged" in err


async def test_cli_send_file_that_is_not_json_fails_clearly(stack: Any, tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, out, err = await stack.cli("send", "payment.succeeded", "--url", f"{stack.base_url}/webhooks/dodo",
                                     "--file", str(bad))
    assert code == 2
    assert "is not JSON" in out + err
    assert "Traceback" not in out + err
