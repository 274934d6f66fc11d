"""A merchant's own handler module, from a folder of its own, as a new user would run it: the
built-in grants still register, the module is found from the working directory, a clash with
dodo-worker's package names or a typo'd event type stops the process with one line naming it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import types
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support import delete_keys, free_port, wait_until
from worker.registry import Registry, RegistryError, load_handler_modules
from worker.signing import generate_secret

BIN = Path(sys.executable).parent / "dodo-worker"
PRODUCT = "pdt_e9mUw084cWnu0tz"  # the bundled payment.succeeded sample's product
CATALOG = f'[products.{PRODUCT}]\nlicense_key = {{ activations_limit = 2 }}\n'
ACME = '''
from pathlib import Path

from worker import on


@on("payment.succeeded")
async def welcome(event, ctx):
    marker = Path("failed-once")
    if not marker.exists():  # fail the first attempt only: the retry must not erase it
        marker.write_text("x")
        raise RuntimeError("the mail server said no")
'''


def merchant_folder(tmp_path: Path, module: str = ACME, catalog: bool = True) -> Path:
    folder = tmp_path / "acme-shop"
    (folder / "acme_hooks").mkdir(parents=True)
    (folder / "acme_hooks" / "__init__.py").write_text(textwrap.dedent(module))
    if catalog:
        (folder / "entitlements.toml").write_text(CATALOG)
    return folder


def clean_env(**values: str) -> dict[str, str]:
    """What a merchant's shell holds: no PYTHONPATH, none of the suite's settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HANDLER_MODULES", "ENTITLEMENTS_FILE",
                                                             "DATABASE_URL", "DODO_PAYMENTS_WEBHOOK_KEY")}
    return {**env, **values}


def dodo(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN), *args], cwd=folder, env=clean_env(**env), capture_output=True, text=True,
                          timeout=60, check=False)


def registered(folder: Path, **env: str) -> list[str]:
    done = dodo(folder, "handlers", "--json", **env)
    assert done.returncode == 0, done.stderr
    return [h["name"] for h in json.loads(done.stdout)]


# 1. naming your module keeps the built-in grants, and the example is not loaded -----------------

def test_naming_your_own_module_keeps_the_built_in_grants_and_not_the_example(tmp_path: Path) -> None:
    folder = merchant_folder(tmp_path)
    names = registered(folder, HANDLER_MODULES="acme_hooks")
    assert "acme_hooks.welcome" in names
    assert {"entitlements.payment", "entitlements.refund", "entitlements.subscription"} <= set(names)
    assert not any(n.startswith("handlers.example") for n in names), "the example logs emails: only when named"


def test_the_example_loads_when_named_and_nothing_is_registered_without_a_catalog(tmp_path: Path) -> None:
    folder = merchant_folder(tmp_path, catalog=False)
    assert registered(folder) == []
    assert registered(folder, HANDLER_MODULES="handlers.example") == ["handlers.example.log_payment"]


# 2. found from the working directory, with no PYTHONPATH ---------------------------------------

def test_a_worker_started_in_the_merchants_folder_grants_and_keeps_both_attempts(tmp_path: Path,
                                                                               redis_url: str) -> None:
    folder = merchant_folder(tmp_path)
    queue = f"dodo-test:{uuid.uuid4().hex[:10]}"
    env = {"HANDLER_MODULES": "acme_hooks", "DATABASE_URL": f"sqlite+aiosqlite:///{folder}/shop.db",
           "REDIS_URL": redis_url, "QUEUE_NAME": queue, "DODO_PAYMENTS_WEBHOOK_KEY": generate_secret(),
           "PORT": str(free_port()), "HOST": "127.0.0.1", "RETRY_BASE_SECONDS": "0.05", "LOG_LEVEL": "INFO"}
    assert dodo(folder, "db", "upgrade", **env).returncode == 0
    logs = {name: (folder / f"{name}.log").open("wb") for name in ("web", "worker")}
    procs = [subprocess.Popen([str(BIN), name], cwd=folder, env=clean_env(**env), stdout=logs[name],
                              stderr=subprocess.STDOUT) for name in ("web", "worker")]
    try:
        url = f"http://127.0.0.1:{env['PORT']}/webhooks/dodo"

        def sent() -> subprocess.CompletedProcess[str] | None:
            done = dodo(folder, "send", "payment.succeeded", "--url", url, "--id", "msg_acme_1", **env)
            return done if done.returncode == 0 else None


        async def wait_for(check: Any, what: str) -> Any:
            async def once() -> Any:
                assert all(p.poll() is None for p in procs), "\n".join(
                    (folder / f"{n}.log").read_text() for n in logs)
                return await asyncio.to_thread(check)
            return await wait_until(once, 60, what=what)

        async def scenario() -> dict[str, Any]:
            await wait_for(sent, "the web process to take the webhook")

            def shown() -> dict[str, Any] | None:
                done = dodo(folder, "events", "show", "msg_acme_1", "--json", **env)
                event = json.loads(done.stdout) if done.returncode == 0 else None
                return event if event and event["status"] == "processed" else None

            return await wait_for(shown, "the event to be processed")  # type: ignore[no-any-return]

        event = asyncio.run(scenario())
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        for log in logs.values():
            log.close()
        asyncio.run(delete_keys(redis_url, [f"{queue}*", f"arq:*:{queue}:*"]))

    handlers = {h["name"]: h for h in event["handlers"]}
    assert handlers["entitlements.payment"]["status"] == "succeeded"
    welcome = handlers["acme_hooks.welcome"]
    assert welcome["status"] == "succeeded" and welcome["attempts"] == 2
    assert [r["status"] for r in welcome["runs"]] == ["failed", "succeeded"]
    assert "the mail server said no" in welcome["runs"][0]["error"]
    grants = json.loads(dodo(folder, "grants", "list", "--json", **env).stdout)
    keys = [g for g in grants if g["kind"] == "license_key" and g["product_id"] == PRODUCT]
    assert len(keys) == 1 and keys[0]["status"] == "active"


# 3. dodo-worker's package names ----------------------------------------------------------------

@pytest.mark.parametrize("name", ["handlers", "worker", "integrations"])
def test_a_merchant_package_named_like_ours_stops_with_one_line(tmp_path: Path, name: str) -> None:
    folder = merchant_folder(tmp_path)
    (folder / name).mkdir()
    (folder / name / "__init__.py").write_text("")
    for extra in ({}, {"PYTHONPATH": "."}):
        done = dodo(folder, "handlers", HANDLER_MODULES="acme_hooks", **extra)
        assert done.returncode == 2, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and f"a module named {name!r}" in lines[0] and "rename yours" in lines[0], lines


def test_a_distribution_installed_over_our_handlers_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip overwrote handlers/__init__.py with another distribution's: same place, not ours."""
    import handlers

    impostor = types.ModuleType("handlers")
    impostor.__file__ = handlers.__file__
    monkeypatch.setitem(sys.modules, "handlers", impostor)
    with pytest.raises(RegistryError, match=r"not dodo-worker's own.*force-reinstall"):
        load_handler_modules([])


# 4. a typo in an event type --------------------------------------------------------------------

def test_a_typo_in_an_event_type_stops_the_worker_naming_the_nearest_type(tmp_path: Path) -> None:
    folder = merchant_folder(tmp_path, module='''
        from worker import on

        @on("payment.succeded")
        async def welcome(event, ctx): ...
    ''')
    done = dodo(folder, "worker", HANDLER_MODULES="acme_hooks", REDIS_URL="redis://127.0.0.1:1/0")
    assert done.returncode == 2
    message = done.stderr.replace("\n", "")
    assert "'payment.succeded'" in message and "did you mean 'payment.succeeded'" in message
    assert "acme_hooks.welcome" in message and "Traceback" not in done.stderr


def test_unknown_types_and_groups_are_refused_unless_marked_known_type_false() -> None:
    registry = Registry()
    with pytest.raises(RegistryError, match=r"did you mean 'subscription\.\*'"):
        @registry.on("subscriptions.*")
        async def subs(event, ctx): ...
    with pytest.raises(RegistryError, match=r"did you mean 'refund\.succeeded'"):
        @registry.on("refund.succeded")
        async def refund(event, ctx): ...

    @registry.on("beta.feature", "beta.*", known_type=False)
    async def beta(event, ctx): ...

    @registry.on("dunning.*", "entitlement_grant.created", "*")
    async def known(event, ctx): ...

    assert {h.name.rsplit(".", 1)[-1] for h in registry.handlers_for("beta.feature")} == {"beta", "known"}
