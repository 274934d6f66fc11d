"""`events list` reads at 80 columns with every id whole, and `events show` and `events replay`
take the start of an id; every option says what it does, and flags read as flags."""

from __future__ import annotations

import json
from typing import Any

import pytest
import typer

from tests.support import Stack
from worker import Context, Event
from worker.cli.main import app as cli_app
from worker.registry import Registry
from worker.store import EventStatus

NARROW = {"COLUMNS": "80"}
# A reconciliation event id is long; with a long type it cannot share a line at 80 columns.
LONG_ID = "rec_subscription.update_payment_method_sub_7EeHq2ewQuadropD2ra_20261203"


async def _sent(stack: Stack, event_type: str, event_id: str | None = None) -> str:
    sent_id, response = await stack.send(event_type, event_id=event_id)
    assert response.status_code == 200, response.text
    return sent_id


@pytest.fixture
async def events_stack(stack_factory, registry: Registry) -> Stack:
    @registry.on("payment.succeeded")
    async def noop(event: Event, ctx: Context) -> None:
        pass

    stack: Stack = await stack_factory()
    return stack


async def test_list_at_80_columns_shows_every_id_whole(events_stack: Stack) -> None:
    short_ids = [await _sent(events_stack, "payment.succeeded") for _ in range(2)]
    for event_id in short_ids:
        await events_stack.wait_status(event_id, EventStatus.PROCESSED)
    code, _, err = await events_stack.cli("events", "list", env=NARROW)
    assert code == 0
    lines = err.splitlines()
    assert all(len(line) <= 80 for line in lines), err
    for event_id in short_ids:  # webhook ids and a payment type share one line at 80 columns
        [line] = [line for line in lines if event_id in line]
        assert line.split() == [event_id, "payment.succeeded", "processed", "1", *line.split()[-2:]]

    await _sent(events_stack, "subscription.update_payment_method", LONG_ID)
    code, _, err = await events_stack.cli("events", "list", env=NARROW)
    assert code == 0
    lines = err.splitlines()
    assert all(len(line) <= 80 for line in lines), err
    for event_id in [LONG_ID, *short_ids]:  # too wide for one line: each id on its own line
        assert event_id in lines, err
        assert lines[lines.index(event_id) + 1].startswith("  ")


async def test_show_and_replay_take_a_unique_prefix(events_stack: Stack) -> None:
    event_id = await _sent(events_stack, "payment.succeeded", "evt_prefix_one_a1")
    await events_stack.wait_status(event_id, EventStatus.PROCESSED)

    code, out, err = await events_stack.cli("events", "show", "evt_prefix_one", "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == event_id

    code, out, err = await events_stack.cli("events", "replay", "evt_prefix_o", "--json")
    assert code == 0, err
    assert json.loads(out)["replayed"] == [event_id]
    await events_stack.wait_status(event_id, EventStatus.PROCESSED)


async def test_an_ambiguous_or_unknown_prefix_is_one_line(events_stack: Stack) -> None:
    for suffix in ("a", "b", "c"):
        await _sent(events_stack, "payment.succeeded", f"evt_twin_{suffix}")
    for command in ("show", "replay"):
        code, out, err = await events_stack.cli("events", command, "evt_twin_")
        assert (code, out) == (2, ""), err
        assert len(err.strip().splitlines()) == 1, err
        assert "3 events start with 'evt_twin_'" in err

        code, out, err = await events_stack.cli("events", command, "evt_nothing_like_it")
        assert (code, out) == (1, ""), err
        assert err.strip().splitlines() == ["dodo-worker: no event 'evt_nothing_like_it'"]
    # A whole id that is also the start of another still names its own event.
    await _sent(events_stack, "payment.succeeded", "evt_twin_a2")
    code, out, err = await events_stack.cli("events", "show", "evt_twin_a", "--json")
    assert code == 0, err
    assert json.loads(out)["id"] == "evt_twin_a"


def _events_commands() -> dict[str, Any]:
    group: Any = typer.main.get_command(cli_app)  # typer's own click: duck-typed
    return dict(group.commands["events"].commands)


@pytest.mark.parametrize("name", ["list", "show", "replay"])
def test_every_option_has_help_and_flags_take_no_value(name: str) -> None:
    command = _events_commands()[name]
    for param in command.params:
        assert getattr(param, "help", None), f"events {name}: {param.name} has no help"
    from typer.testing import CliRunner

    result = CliRunner().invoke(cli_app, ["events", name, "--help"], env={"COLUMNS": "100"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output.replace("--help", ""), result.output
    flags = [line for line in result.output.splitlines() if "--json" in line]
    assert flags and all("<" not in line for line in flags), result.output
