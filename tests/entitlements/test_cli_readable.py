"""The grants and hooks commands as support reads them in an 80-column terminal: whole ids,
emails and products on lines that fit, ids given back by a unique start (like git), help on
every option, and the download counter the docs promise in `grants show`."""

from __future__ import annotations

import json
from typing import Any

import typer

from tests.entitlements.conftest import CUSTOMER, EMAIL, PRODUCT, entitlements, payment, send_and_wait
from tests.support import Stack, wait_until
from worker.cli.main import app as cli_app
from worker.entitlements.models import GrantRow

NARROW = {"COLUMNS": "80"}


def fits(text: str) -> None:
    assert text.strip(), "nothing printed"
    too_long = [line for line in text.splitlines() if len(line) > 80]
    assert too_long == []


async def test_grants_list_and_show_read_at_80_columns(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_narrow_1", [(PRODUCT, 1)]))
    found = await entitlements(ent_stack, customer_id=CUSTOMER)
    key = next(g for g in found if g["kind"] == "license_key")

    code, out, err = await ent_stack.cli("grants", "list", "--customer-id", CUSTOMER, env=NARROW)
    assert code == 0, err
    fits(err)
    lines = err.splitlines()
    for grant in found:  # each grant: its whole id, then its product, customer and payment, unbroken
        [at] = [n for n, line in enumerate(lines) if line.startswith(grant["id"])]
        assert grant["status"] in lines[at] and grant["kind"] in lines[at]
        assert all(word in lines[at + 1] for word in (PRODUCT, EMAIL, "pay_narrow_1"))
    assert key["license_key"]["key"] not in err and "0/2 activations" in err
    assert lines[-1] == f"{len(found)} grant(s)"

    code, _, err = await ent_stack.cli("grants", "show", key["id"], env=NARROW)
    assert code == 0, err
    fits(err)
    assert f"id  {key['id']}" in err and "granted: - -> active\n      by event:" in err


async def test_a_unique_start_of_an_id_names_the_grant(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_prefix", [(PRODUCT, 1)]))
    grant = next(g for g in await entitlements(ent_stack, payment_id="pay_prefix") if g["kind"] == "file")
    prefix = grant["id"][:10]

    for given in (prefix, prefix.removeprefix("grt_")):
        code, out, err = await ent_stack.cli("grants", "show", given, "--json")
        assert code == 0, err
        assert json.loads(out)["id"] == grant["id"]
    code, out, err = await ent_stack.cli("grants", "revoke", prefix, "--json")
    assert code == 0, err
    assert (json.loads(out)["id"], json.loads(out)["status"]) == (grant["id"], "revoked")
    code, out, err = await ent_stack.cli("hooks", "list", "--grant", prefix, "--json")
    assert code == 0, err

    async with ent_stack.db.sessions() as session, session.begin():  # a second grant starting alike
        row = await session.get(GrantRow, grant["id"])
        assert row is not None
        twin = {c.key: getattr(row, c.key) for c in GrantRow.__table__.columns}
        session.add(GrantRow(**{**twin, "id": prefix + "0" * (len(grant["id"]) - len(prefix)), "unit": 99}))
    code, out, err = await ent_stack.cli("grants", "show", prefix)
    assert code == 1 and out == ""
    assert "ambiguous" in err and grant["id"] in err
    code, out, err = await ent_stack.cli("grants", "restore", grant["id"], "--json")  # the whole id still works
    assert code == 0 and json.loads(out)["status"] == "active", err


async def test_grants_show_counts_downloads(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_counted", [(PRODUCT, 1)]))
    grant = next(g for g in await entitlements(ent_stack, payment_id="pay_counted") if g["kind"] == "file")
    for _ in range(2):
        assert (await ent_stack.http.get(grant["file"]["download_url"])).status_code == 200

    code, out, err = await ent_stack.cli("grants", "show", grant["id"], "--json")
    assert code == 0, err
    assert json.loads(out)["file"]["downloads"] == 2
    code, _, err = await ent_stack.cli("grants", "show", grant["id"])
    assert code == 0 and "downloads  2" in err


def _commands() -> list[tuple[str, Any]]:
    """(name, command) of `grants ...`, `hooks ...`, `reconcile` and `send`, as `dodo-worker` builds them."""
    root: Any = typer.main.get_command(cli_app)
    found = [(name, root.commands[name]) for name in ("reconcile", "send")]
    for group in ("grants", "hooks"):
        found += [(f"{group} {sub}", command) for sub, command in root.commands[group].commands.items()]
    return found


def test_every_option_has_help() -> None:
    missing = [f"{name} {param.opts[0]}" for name, command in _commands() for param in command.params
               if param.param_type_name == "option" and not param.help]
    assert missing == []
    assert len(_commands()) == 9


async def test_hooks_list_reads_at_80_columns(ent_stack: Stack) -> None:
    await send_and_wait(ent_stack, "payment.succeeded", payment("pay_hooks", [(PRODUCT, 1)]))
    grant = next(g for g in await entitlements(ent_stack, payment_id="pay_hooks") if g["kind"] == "license_key")
    code, _, err = await ent_stack.cli("grants", "revoke", grant["id"], "--reason", "ticket 80")
    assert code == 0, err

    async def listed() -> Any:
        code, out, _ = await ent_stack.cli("hooks", "list", "--json")
        rows = json.loads(out)
        return rows if code == 0 and rows and all(r["status"] != "pending" for r in rows) else None

    [row] = await wait_until(listed, what="the worker to expand the revoke")
    code, _, err = await ent_stack.cli("hooks", "list", env=NARROW)
    assert code == 0, err
    fits(err)
    assert err.splitlines()[0].split() == [row["id"], "expanded", "entitlement.revoked"]
    assert f"grant {grant['id']}" in err
