"""The real `dodo-worker worker` process: SIGTERM lets running handlers finish; SIGKILL loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import Stack, settings_env, wait_until
from worker.store import EventStatus

HANDLERS = textwrap.dedent("""
    import asyncio, os
    from pathlib import Path
    from worker import on

    @on("payment.succeeded")
    async def slow(event, ctx):
        marks = Path(os.environ["MARK_DIR"])
        attempt = len(list(marks.glob(event.id + ".*")))
        (marks / f"{event.id}.{attempt}").write_text(ctx.idempotency_key)
        if os.environ.get("HANG_FIRST_ATTEMPT") and attempt == 0:
            await asyncio.sleep(3600)  # hangs until the worker is killed
        await asyncio.sleep(float(os.environ.get("HANDLER_SECONDS", "0")))
        (marks / f"{event.id}.done").write_text("yes")
""")


@pytest.fixture
def handler_dir(tmp_path: Path) -> Path:
    (tmp_path / "process_handlers.py").write_text(HANDLERS)
    (tmp_path / "marks").mkdir()
    return tmp_path


def start_worker(stack: Stack, handler_dir: Path, **env: str) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **settings_env(stack.settings), "HANDLER_MODULES": "process_handlers",
                "PYTHONPATH": str(handler_dir), "MARK_DIR": str(handler_dir / "marks"), **env}
    return subprocess.Popen([sys.executable, "-m", "worker.cli.main", "worker"], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


async def wait_for_file(path: Path, timeout: float = 30) -> None:
    async def exists() -> bool:
        return path.exists()

    await wait_until(exists, timeout, what=f"{path.name} to appear")


async def test_sigterm_lets_a_running_handler_finish(stack_factory, handler_dir: Path) -> None:
    stack = await stack_factory(worker=False, SHUTDOWN_GRACE_SECONDS=20)
    worker = start_worker(stack, handler_dir, HANDLER_SECONDS="1.5")
    try:
        event_id, _ = await stack.send("payment.succeeded")
        await wait_for_file(handler_dir / "marks" / f"{event_id}.0")
        worker.send_signal(signal.SIGTERM)  # while the handler is still sleeping
        output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, output.decode()
        assert (handler_dir / "marks" / f"{event_id}.done").exists()
        row = await stack.event(event_id)
        assert row is not None and row.status == EventStatus.PROCESSED
        assert row.attempts == 1
    finally:
        if worker.poll() is None:
            worker.kill()


async def test_a_worker_killed_mid_handler_loses_nothing(stack_factory, handler_dir: Path) -> None:
    # arq hands a job to another worker once the dead one's lock expires (JOB_TIMEOUT + 10 s).
    stack = await stack_factory(worker=False, JOB_TIMEOUT_SECONDS=2)
    first = start_worker(stack, handler_dir, HANG_FIRST_ATTEMPT="1")
    second = None
    try:
        event_id, _ = await stack.send("payment.succeeded")
        await wait_for_file(handler_dir / "marks" / f"{event_id}.0")
        first.kill()  # SIGKILL: no clean-up of any kind
        first.wait(10)
        second = start_worker(stack, handler_dir)
        row = await stack.wait_status(event_id, EventStatus.PROCESSED, timeout=60)
        keys = {p.read_text() for p in (handler_dir / "marks").glob(f"{event_id}.[0-9]")}
        assert len(keys) == 1, "both attempts saw the same idempotency key"
        assert row.attempts == 2
        runs = await stack.runs(event_id)
        assert [(r.status, r.attempts) for r in runs.values()] == [("succeeded", 2)]
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(30)
