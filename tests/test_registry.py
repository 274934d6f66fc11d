"""`@on(...)`: patterns, matching, and the mistakes that stop the process at start."""

from __future__ import annotations

import sys
import textwrap

import pytest

from worker.registry import Registry, RegistryError, load_handler_modules


def test_exact_prefix_and_catch_all_patterns() -> None:
    registry = Registry()

    @registry.on("payment.succeeded", "refund.succeeded")
    async def money(event, ctx): ...

    @registry.on("subscription.*")
    async def subs(event, ctx): ...

    @registry.on("*")
    async def everything(event, ctx): ...

    def names(event_type: str) -> set[str]:
        return {h.name.rsplit(".", 1)[-1] for h in registry.handlers_for(event_type)}

    assert names("payment.succeeded") == {"money", "everything"}
    assert names("refund.succeeded") == {"money", "everything"}
    assert names("subscription.on_hold") == {"subs", "everything"}
    assert names("subscriptionx.on_hold") == {"everything"}
    assert names("payout.success") == {"everything"}


def test_a_plain_function_is_refused() -> None:
    registry = Registry()
    with pytest.raises(RegistryError, match="must be 'async def'"):
        @registry.on("payment.succeeded")
        def not_async(event, ctx): ...


def test_a_duplicate_handler_name_is_refused() -> None:
    registry = Registry()

    @registry.on("payment.succeeded", name="grant")
    async def first(event, ctx): ...

    with pytest.raises(RegistryError, match="registered twice"):
        @registry.on("refund.succeeded", name="grant")
        async def second(event, ctx): ...


@pytest.mark.parametrize("pattern", ["", "payment", "Payment.Succeeded", "payment.*.x", "*.succeeded", "pay ment.x"])
def test_malformed_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(RegistryError, match=r"use 'group\.action'"):
        Registry().on(pattern)


def test_a_handler_module_that_fails_to_import_is_named(tmp_path, monkeypatch) -> None:
    (tmp_path / "broken_handlers.py").write_text("import does_not_exist\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(RegistryError, match="cannot import handler module 'broken_handlers'"):
        load_handler_modules(["broken_handlers"])


def test_the_worker_refuses_to_start_with_a_sync_handler(tmp_path) -> None:
    """`dodo-worker worker` with a bad HANDLER_MODULES stops with one clear line."""
    import subprocess

    (tmp_path / "sync_handlers.py").write_text(textwrap.dedent("""
        from worker import on

        @on("payment.succeeded")
        def oops(event, ctx):
            pass
    """))
    result = subprocess.run(
        [sys.executable, "-m", "worker.cli.main", "worker"],
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path), "HANDLER_MODULES": "sync_handlers",
             "REDIS_URL": "redis://127.0.0.1:1/0"},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "handler sync_handlers.oops must be 'async def'" in result.stderr.replace("\n", "")
