"""`dodo-worker reconcile` as a user meets it: one JSON object with --json, a summary otherwise,
and one clear line (never the API key) when something is wrong."""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from tests.reconcile.conftest import FakeApi
from tests.support import free_port
from worker.reconcile.lock import ScanLock, lock_key
from worker.testing.fakedodo.data import populate


async def test_json_is_one_object_and_repaired_is_empty_when_nothing_is_missing(
        stack_factory: Any, fake_dodo: FakeApi) -> None:
    stack = await stack_factory(web=False, worker=False)
    code, out, err = await stack.cli("reconcile", "--json", env=fake_dodo.env)
    assert code == 0, err
    result = json.loads(out)  # the whole of stdout is one JSON object
    assert isinstance(result, dict)
    assert (result["scanned"], result["repaired"]) == (0, [])
    assert result["api_calls"] == 5  # one empty page of each list (disputes: lost, accepted)


async def test_summary_without_json(stack_factory: Any, fake_dodo: FakeApi) -> None:
    made = populate(fake_dodo.fake, payments=3)
    stack = await stack_factory(web=False, worker=False)
    code, out, err = await stack.cli("reconcile", "--dry-run", "--since", "1d", env=fake_dodo.env)
    assert code == 0, err
    assert "scanned 3 object(s)" in err and "would repair 3" in err
    assert made["payments"][0]["payment_id"] in err
    assert out == ""  # the human summary goes to the terminal (stderr), stdout stays clean


async def test_errors_are_one_clear_line(stack_factory: Any, fake_dodo: FakeApi) -> None:
    stack = await stack_factory(web=False, worker=False)

    code, out, err = await stack.cli("reconcile", "--json", env={"DODO_PAYMENTS_API_KEY": ""})
    assert (code, out) == (2, "")
    assert "DODO_PAYMENTS_API_KEY is not set" in err and len(err.strip().splitlines()) == 1

    for bad in ("yesterday", "2026-13-45"):
        code, out, err = await stack.cli("reconcile", "--since", bad, env=fake_dodo.env)
        assert (code, out) == (2, "")
        assert f"--since {bad!r}: use ISO-8601" in err

    code, _, err = await stack.cli("reconcile", "--since", "1h", "--until", "2h", env=fake_dodo.env)
    assert code == 2 and "--since must be before --until" in err

    nowhere = f"http://127.0.0.1:{free_port()}"
    code, out, err = await stack.cli("reconcile", "--json", env={**fake_dodo.env, "DODO_PAYMENTS_BASE_URL": nowhere})
    assert (code, out) == (1, "")
    assert f"could not read Dodo's API at {nowhere}: GET /payments: cannot connect" in err
    assert fake_dodo.fake.api_key not in err

    wrong = "sk_test_not_the_right_key_42"
    code, out, err = await stack.cli("reconcile", "--json", env={**fake_dodo.env, "DODO_PAYMENTS_API_KEY": wrong})
    assert (code, out) == (1, "")
    assert "the API key was refused (HTTP 401)" in err and wrong not in err


async def test_a_scan_already_running_is_reported(stack_factory: Any, fake_dodo: FakeApi) -> None:
    stack = await stack_factory(web=False, worker=False)
    assert stack.settings.REDIS_URL
    redis = Redis.from_url(stack.settings.REDIS_URL)
    lock = ScanLock(redis, lock_key(stack.settings.QUEUE_NAME))
    try:
        assert await lock.acquire()
        code, out, err = await stack.cli("reconcile", "--json", env=fake_dodo.env)
        assert (code, out) == (1, "")
        assert "another reconciliation scan is running" in err
        assert fake_dodo.fake.api_calls() == 0
        # A dry run writes nothing, so it needs no lock.
        code, out, _ = await stack.cli("reconcile", "--json", "--dry-run", env=fake_dodo.env)
        assert code == 0 and json.loads(out)["dry_run"] is True
    finally:
        await lock.release()
        await redis.aclose()
