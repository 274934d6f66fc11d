"""`dodo-worker reconcile` on a large gap: a summary by default (how many per kind, the first few
ids), every object with --verbose, --json unchanged; its help reads at 80 columns."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.reconcile.conftest import FakeApi
from worker.testing.fakedodo.data import populate


async def test_dry_run_summarises_by_kind_and_verbose_lists_every_object(stack_factory: Any,
                                                                        fake_dodo: FakeApi) -> None:
    made = populate(fake_dodo.fake, payments=40, refunds=12)
    payments = [p["payment_id"] for p in made["payments"]]
    refunds = [r["refund_id"] for r in made["refunds"]]
    stack = await stack_factory(web=False, worker=False)

    code, out, err = await stack.cli("reconcile", "--dry-run", "--since", "1d", env={**fake_dodo.env, "COLUMNS": "80"})
    assert code == 0, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) <= 8  # not one row per missing object
    text = " ".join(err.split())  # the summary wraps at the terminal's width
    assert text.startswith("scanned 52 object(s) from ") and "; would repair 52 " in text
    named = re.search(r"40 payment\(s\): ((?:pay_\w+, ){4}pay_\w+) and 35 more", text)
    assert named is not None and set(named.group(1).split(", ")) <= set(payments)
    assert re.search(r"12 refund\(s\): (?:\w+, ){4}\w+ and 7 more", text)
    assert "--verbose" in lines[-1]
    assert max(len(line) for line in lines) <= 80

    code, out, err = await stack.cli("reconcile", "--dry-run", "--since", "1d", "--verbose", env=fake_dodo.env)
    assert code == 0, err
    assert all(f"payment {p} -> event" in err for p in payments)
    assert all(f"refund {r} -> event" in err for r in refunds)

    code, out, err = await stack.cli("reconcile", "--dry-run", "--since", "1d", "--json", env=fake_dodo.env)
    assert code == 0, err
    assert sorted(r["id"] for r in json.loads(out)["repaired"]) == sorted(payments + refunds)


async def test_help_reads_at_80_columns(stack_factory: Any) -> None:
    stack = await stack_factory(web=False, worker=False)
    code, out, err = await stack.cli("reconcile", "--help", env={"COLUMNS": "80"})
    assert code == 0, err
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    options = lines[lines.index("Options:") + 1:]
    assert len(options) == 7
    # Each option's help is one line: nothing wraps in the middle of a sentence.
    assert all(line.rstrip().endswith((".", ")")) for line in options), options
