"""A database without tables, an unreachable database or Redis: every process and command says so
in one line naming the fix and exits 2, never a traceback; and the long-running processes are
quiet and stop cleanly (no ERROR line, `dev` removes its embedded Redis)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.support import free_port, settings_env, wait_until
from worker.embedded_redis import EmbeddedRedis
from worker.signing import generate_secret
from worker.store import Database
from worker.supervisor import WorkerSupervisor

CLI = str(Path(sys.executable).parent / "dodo-worker")
PASSWORD = "hunter2-never-printed"
# What a user's shell may hold that would change what these commands see.
OURS = ("DATABASE_URL", "REDIS_URL", "HANDLER_MODULES", "DODO_PAYMENTS_WEBHOOK_KEY", "DODO_PAYMENTS_API_KEY",
        "ENTITLEMENTS_FILE", "LOG_LEVEL", "PORT")


def user_env(**env: str) -> dict[str, str]:
    base = {name: value for name, value in os.environ.items() if name not in OURS}
    return {**base, "DODO_PAYMENTS_WEBHOOK_KEY": generate_secret(), **env}


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], cwd=cwd, env=user_env(**env), capture_output=True, text=True,
                          timeout=60, check=False)


def assert_one_line(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """Exit 2, at most three lines on stderr (one, wrapped), naming `words`; no traceback."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "╭" not in output, output
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    flat = " ".join(result.stderr.split())
    for word in words:
        assert word in flat, result.stderr
    return flat


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


# Every command that reads or writes the database, as a user types it.
COMMANDS = [
    ("events", "list"), ("events", "show", "evt_1"), ("events", "replay", "evt_1"),
    ("grants", "list"), ("grants", "show", "grt_1"), ("hooks", "list"), ("hooks", "retry", "--failed"),
    ("worker",), ("web",),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_a_missing_sqlite_file_is_one_line_naming_db_upgrade_and_is_not_created(
        tmp_path: Path, redis_url: str, command: tuple[str, ...]) -> None:
    result = cli(tmp_path, *command, DATABASE_URL="sqlite+aiosqlite:///./dodo-worker.db", REDIS_URL=redis_url)

    assert_one_line(result, "has no tables", "dodo-worker db upgrade", "sqlite+aiosqlite:///./dodo-worker.db")
    assert not (tmp_path / "dodo-worker.db").exists()
    assert list(tmp_path.iterdir()) == []


def test_events_list_on_an_empty_sqlite_file_names_db_upgrade(tmp_path: Path) -> None:
    (tmp_path / "shop.db").touch()

    result = cli(tmp_path, "events", "list", DATABASE_URL="sqlite+aiosqlite:///./shop.db")

    assert_one_line(result, "the database at sqlite+aiosqlite:///./shop.db has no tables",
                    "run `dodo-worker db upgrade`")


@pytest.mark.parametrize("command", [("events", "list"), ("grants", "list"), ("worker",), ("web",),
                                     ("db", "upgrade")], ids=" ".join)
def test_postgresql_refusing_connections_is_one_line_without_the_password(
        tmp_path: Path, redis_url: str, command: tuple[str, ...]) -> None:
    port = closed_port()
    url = f"postgresql+asyncpg://shop:{PASSWORD}@127.0.0.1:{port}/shop"

    result = cli(tmp_path, *command, DATABASE_URL=url, REDIS_URL=redis_url)

    flat = assert_one_line(result, "cannot reach the database", f"127.0.0.1:{port}", "ConnectionRefused")
    assert PASSWORD not in result.stdout + result.stderr
    assert "Redis" not in flat


async def test_a_postgresql_database_without_tables_names_db_upgrade(backend: str, tmp_path: Path) -> None:
    if backend != "postgresql":
        pytest.skip("the PostgreSQL side of an empty database")
    admin = Database(os.environ["TEST_DATABASE_URL"], isolation_level="AUTOCOMMIT")
    name = f"dodo_empty_{os.getpid()}_{free_port()}"
    async with admin.engine.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(os.environ["TEST_DATABASE_URL"]).set(database=name).render_as_string(hide_password=False)
        result = await asyncio.to_thread(cli, tmp_path, "events", "list", DATABASE_URL=url)
        assert_one_line(result, "has no tables", "dodo-worker db upgrade", name)
    finally:
        async with admin.engine.connect() as conn:
            await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


def test_the_worker_with_redis_unreachable_is_one_line_naming_redis(tmp_path: Path, database_url: str) -> None:
    port = closed_port()

    result = cli(tmp_path, "worker", DATABASE_URL=database_url, REDIS_URL=f"redis://:{PASSWORD}@127.0.0.1:{port}/3")

    assert_one_line(result, f"cannot reach Redis at redis://127.0.0.1:{port}/3")
    assert PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("command", ["web", "dev"])
def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path, redis_url: str, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        where = ["--host", "127.0.0.1"] if command == "web" else []  # dev listens on 127.0.0.1
        result = cli(tmp_path, command, *where, "--port", str(port), REDIS_URL=redis_url)
    assert_one_line(result, f"cannot listen on 127.0.0.1:{port}", "--port")
    assert not (tmp_path / "dodo-worker.db").exists() and not (tmp_path / ".env").exists(), "nothing started"


@pytest.mark.parametrize("command", [("worker",), ("web",)], ids=" ".join)
def test_a_redis_url_that_is_not_one_is_one_line(tmp_path: Path, database_url: str,
                                                  command: tuple[str, ...]) -> None:
    result = cli(tmp_path, *command, DATABASE_URL=database_url, REDIS_URL="localhost:6379")

    assert_one_line(result, "REDIS_URL is not a Redis URL", "redis://")


async def test_ready_says_the_tables_are_missing(stack_factory: Any, backend: str) -> None:
    stack = await stack_factory(worker=False)
    async with stack.db.engine.begin() as conn:  # the tables vanish while the web process runs
        await conn.execute(text("DROP TABLE events CASCADE" if backend == "postgresql" else "DROP TABLE events"))

    ready = await stack.http.get(f"{stack.base_url}/ready")

    assert ready.status_code == 503
    assert ready.json()["sql"] == "no tables"
    assert ready.json()["redis"] == "ok"
    assert "db upgrade" in ready.json()["error"]


async def test_a_worker_that_cannot_start_on_the_database_says_database_not_redis(
        database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture, backend: str) -> None:
    """Redis goes away and comes back; meanwhile the database lost its tables. The worker's
    restarts fail on SQL, and its log says so instead of "lost Redis"."""
    if backend != "sqlite":
        pytest.skip("one backend is enough")
    from tests.support import make_settings

    redis = EmbeddedRedis().start()
    settings = make_settings(database_url, redis.url)
    supervisor = WorkerSupervisor(settings, load_modules=False)
    caplog.set_level(logging.INFO, logger="dodo_worker")
    running = asyncio.create_task(supervisor.run())
    try:
        await wait_until(lambda: _logged(caplog, "worker ready"), what="the worker to start")
        redis.stop()
        await wait_until(lambda: _logged(caplog, "lost Redis"), what="the worker to lose Redis")
        for suffix in ("", "-wal", "-shm"):  # the next start finds no tables
            Path(f"{make_url(database_url).database}{suffix}").unlink(missing_ok=True)
        redis.start()
        line = await wait_until(lambda: _logged(caplog, "lost the database"), timeout=30,
                                what="the restart to fail on the database")
        assert "has no tables" in line and "db upgrade" in line
    finally:
        supervisor.request_stop()
        await running
        redis.close()


async def _logged(caplog: pytest.LogCaptureFixture, words: str) -> str | None:
    return next((r.getMessage() for r in caplog.records if words in r.getMessage()), None)


def start(cwd: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    """A long-running command in a session of its own, as a terminal runs it (Ctrl-C signals the group)."""
    return subprocess.Popen([CLI, *args], cwd=cwd, env=user_env(**env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


async def wait_ready(port: int, process: subprocess.Popen[str]) -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        async def ready() -> bool:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                raise AssertionError(f"exited with {process.returncode}: {output}")
            try:
                return (await http.get(f"http://127.0.0.1:{port}/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await wait_until(ready, timeout=60, what="/ready to answer 200")


def stop(process: subprocess.Popen[str], how: str) -> str:
    if how == "Ctrl-C":
        os.killpg(process.pid, signal.SIGINT)  # what the terminal does: the whole group
    else:
        process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def assert_clean_stop(process: subprocess.Popen[str], output: str) -> None:
    assert process.returncode == 0, output
    assert "ERROR" not in output and "Traceback" not in output and "Aborted" not in output, output


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
async def test_dev_stops_cleanly_and_removes_its_embedded_redis(tmp_path: Path, how: str) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    port = free_port()
    dev = start(tmp_path, "dev", "--port", str(port), TMPDIR=str(temp), DATABASE_URL="sqlite+aiosqlite:///./dev.db")
    try:
        await wait_ready(port, dev)
        [redis_dir] = temp.glob("dodo-worker-redis-*")
        redis_port = int((tmp_path / ".dev" / "redis-url").read_text().rsplit(":", 1)[1].split("/")[0])
    finally:
        output = stop(dev, how)

    assert_clean_stop(dev, output)
    assert not redis_dir.exists()
    assert not (tmp_path / ".dev" / "redis-url").exists()
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", redis_port), 1):
        pass


@pytest.mark.parametrize("how", ["Ctrl-C", "SIGTERM"])
async def test_web_stops_cleanly(tmp_path: Path, database_url: str, redis_url: str, how: str) -> None:
    port = free_port()
    web = start(tmp_path, "web", "--port", str(port), "--host", "127.0.0.1", DATABASE_URL=database_url,
                REDIS_URL=redis_url)
    try:
        await wait_ready(port, web)
    finally:
        output = stop(web, how)

    assert_clean_stop(web, output)


async def test_the_worker_is_quiet_about_its_cron_jobs_and_stops_cleanly(stack_factory: Any, tmp_path: Path) -> None:
    """At DEBUG the hook-delivery cron's lines are there, as DEBUG: at INFO they are not."""
    stack = await stack_factory(web=False, worker=False)
    env = {**settings_env(stack.settings), "LOG_LEVEL": "DEBUG"}
    worker = start(tmp_path, "worker", **env)
    lines: list[str] = []
    try:
        assert worker.stdout is not None
        reader = asyncio.create_task(asyncio.to_thread(_read_until, worker.stdout, lines, ":hooks ●"))
        await asyncio.wait_for(reader, 60)
    finally:
        output = stop(worker, "SIGTERM")
    log = "".join(lines) + output

    name = f"{stack.settings.QUEUE_NAME}:hooks"
    cron_lines = [line for line in log.splitlines() if f"→ {name}(" in line or f"← {name} ●" in line]
    assert cron_lines and all(" DEBUG " in line for line in cron_lines), cron_lines
    assert any(" INFO " in line and "worker ready" in line for line in log.splitlines())
    assert_clean_stop(worker, log)
    assert "SIGUSR1" not in " ".join(line for line in log.splitlines() if " INFO " in line)


def _read_until(stream: Any, lines: list[str], words: str) -> None:
    for line in stream:
        lines.append(line)
        if words in line:
            return
