"""Real `dodo-worker web` and `dodo-worker worker` processes for the fault suite.

A `FaultStack` runs the installed entry point (`.venv/bin/dodo-worker`) with settings in the
environment, exactly as a merchant's Procfile would, talks to it over HTTP and the CLI, and
reads the outcome from the SQL store. Each process logs to its own file so a failure shows
what the processes said.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import func, select, text

from tests.support import free_port, sample_envelope, wait_until
from worker.signing import generate_secret, new_message_id, signed_headers
from worker.store import Database, EventRow, HandlerRunRow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent / "dodo-worker"
START_SECONDS = 30.0
PRODUCT = "pdt_e9mUw084cWnu0tz"  # the product of the bundled payment.succeeded sample
CATALOG = f"""
[products.{PRODUCT}]
license_key = {{ activations_limit = 2 }}
files = ["guide.pdf"]
"""
GRANTS_DDL = ("CREATE TABLE fault_grants (payment_id VARCHAR(64) PRIMARY KEY, "
              "event_id VARCHAR(255) NOT NULL, pid INTEGER NOT NULL)")


class Proc:
    """One child process and its log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.popen = subprocess.Popen(args, env=env, cwd=REPO, stdout=self._log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            self.popen.send_signal(sig)

    async def wait_exit(self, timeout: float = 30.0) -> int:
        async def exited() -> bool:
            return not self.alive()

        await wait_until(exited, timeout, what=f"{self.name} (pid {self.pid}) to exit")
        return int(self.popen.returncode)

    def rss_kib(self) -> int:
        """Resident set size from /proc/<pid>/status (VmRSS, in KiB)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def stop(self) -> None:
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._log.close()


class FaultStack:
    """Settings for one test (unique queue, fresh database), the processes started on them, and
    helpers to send webhooks and read what happened."""

    def __init__(self, tmp: Path, database_url: str, redis_url: str, **settings: Any) -> None:
        self.tmp = tmp
        self.secret = generate_secret()
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DODO_PAYMENTS_WEBHOOK_KEY": self.secret,
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "QUEUE_NAME": f"dodo-fault:{uuid.uuid4().hex[:10]}",
            "HANDLER_MODULES": "tests.faults.fault_handlers",
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "MAX_ATTEMPTS": "3",
            "RETRY_BASE_SECONDS": "0.2",
            "RETRY_MAX_SECONDS": "1",
            "JOB_TIMEOUT_SECONDS": "5",  # a killed worker's jobs are free again after 5 + 10 s
            "SWEEP_AFTER_SECONDS": "0",
            "SHUTDOWN_GRACE_SECONDS": "10",
            "WORKER_API_TOKEN": "tok_" + uuid.uuid4().hex,
            "LOG_LEVEL": "INFO",
            "FAULT_FIX_FILE": str(tmp / "poison-fixed"),
            **{k: str(v) for k, v in settings.items()},
        }
        self.db = Database(database_url)
        self.http = httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=100))
        self.procs: list[Proc] = []
        self._count = 0

    def use_entitlements(self) -> None:
        """Also run the built-in entitlement handlers, with a catalog granting a licence key
        and a file for the sample's product."""
        (self.tmp / "guide.pdf").write_bytes(b"%PDF-1.4 fault suite\n")
        (self.tmp / "entitlements.toml").write_text(CATALOG)
        self.env["ENTITLEMENTS_FILE"] = str(self.tmp / "entitlements.toml")
        self.env["HANDLER_MODULES"] += ",handlers.entitlements"

    # processes ---------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        self._count += 1
        proc = Proc(name, [str(BIN), *args], env, self.tmp / f"{self._count:02d}-{name}.log")
        self.procs.append(proc)
        return proc

    async def start_web(self, **env: Any) -> Proc:
        proc = self._spawn("web", ["web"], {**self.env, **{k: str(v) for k, v in env.items()}})

        async def healthy() -> bool:
            if not proc.alive():
                raise AssertionError(f"web exited with {proc.popen.returncode}:\n{proc.log()}")
            try:
                return (await self.http.get(f"{self.base_url}/health", timeout=1)).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_until(healthy, START_SECONDS, what="the web process to answer /health")
        return proc

    async def start_worker(self, **env: Any) -> Proc:
        """A worker process, returned once it has started (and swept the inbox once)."""
        proc = self._spawn("worker", ["worker"], {**self.env, **{k: str(v) for k, v in env.items()}})
        await self.wait_log(proc, "worker ready")
        return proc

    async def wait_log(self, proc: Proc, needle: str, timeout: float = START_SECONDS) -> None:
        async def logged() -> bool:
            if needle in proc.log():
                return True
            if not proc.alive():
                raise AssertionError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log()}")
            return False

        await wait_until(logged, timeout, what=f"{proc.name} to log {needle!r}")

    def cli(self, *args: str, **env: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), *args], env={**self.env, **{k: str(v) for k, v in env.items()}},
                              cwd=REPO, capture_output=True, text=True, timeout=60, check=False)

    def cli_json(self, *args: str) -> Any:
        done = self.cli(*args, "--json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    async def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        await self.http.aclose()
        await self.db.dispose()

    def logs(self) -> str:
        return "\n".join(f"==== {p.log_path.name}\n{p.log()[-6000:]}" for p in self.procs)

    # sending -----------------------------------------------------------------------------
    def signed(self, body: bytes, event_id: str | None = None) -> dict[str, str]:
        return signed_headers(self.secret, body.decode(), event_id or new_message_id())

    async def post(self, body: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self.http.post(f"{self.base_url}/webhooks/dodo", content=body, headers=headers)

    async def send_payment(self, payment_id: str, event_id: str | None = None) -> tuple[str, httpx.Response]:
        """A signed `payment.succeeded` for one order, as Dodo sends it."""
        envelope = sample_envelope("payment.succeeded")
        envelope["data"]["payment_id"] = payment_id
        body = json.dumps(envelope).encode()
        event_id = event_id or f"msg_{payment_id}"
        return event_id, await self.post(body, self.signed(body, event_id))

    async def send_payments(self, payment_ids: Iterable[str], concurrency: int = 50) -> dict[str, int]:
        """POST one order per id over `concurrency` connections; the status code of each."""
        gate = asyncio.Semaphore(concurrency)
        codes: dict[str, int] = {}

        async def one(payment_id: str) -> None:
            async with gate:
                _, response = await self.send_payment(payment_id)
                codes[payment_id] = response.status_code

        await asyncio.gather(*(one(p) for p in payment_ids))
        return codes

    # reading -----------------------------------------------------------------------------
    async def create_grants_table(self) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(text(GRANTS_DDL))

    async def grants(self) -> dict[str, int]:
        """payment_id -> how many grant rows it has (the primary key makes more than one an error)."""
        async with self.db.sessions() as session:
            rows = await session.execute(text("SELECT payment_id, COUNT(*) FROM fault_grants GROUP BY payment_id"))
            return {str(p): int(n) for p, n in rows.all()}

    async def entitlement_grants(self) -> dict[tuple[str, str], int]:
        """(payment_id, kind) -> how many built-in grants exist for it."""
        query = text("SELECT payment_id, kind, COUNT(*) FROM entitlement_grants GROUP BY payment_id, kind")
        async with self.db.sessions() as session:
            return {(str(p), str(k)): int(n) for p, k, n in (await session.execute(query)).all()}

    async def api_entitlements(self, payment_id: str) -> list[dict[str, Any]]:
        """What a merchant's app sees: GET /v1/entitlements?payment_id=..."""
        response = await self.http.get(f"{self.base_url}/v1/entitlements", params={"payment_id": payment_id},
                                       headers={"authorization": f"Bearer {self.env['WORKER_API_TOKEN']}"})
        assert response.status_code == 200, response.text
        return list(response.json()["entitlements"])

    async def statuses(self) -> Counter[str]:
        async with self.db.sessions() as session:
            rows = await session.execute(select(EventRow.status, func.count()).group_by(EventRow.status))
            return Counter({str(s): int(n) for s, n in rows.all()})

    async def run_statuses(self) -> Counter[str]:
        async with self.db.sessions() as session:
            rows = await session.execute(select(HandlerRunRow.status, func.count()).group_by(HandlerRunRow.status))
            return Counter({str(s): int(n) for s, n in rows.all()})

    async def handler_attempts(self) -> int:
        async with self.db.sessions() as session:
            return int(await session.scalar(select(func.coalesce(func.sum(HandlerRunRow.attempts), 0))) or 0)

    async def retried(self) -> int:
        """How many events took more than one attempt."""
        async with self.db.sessions() as session:
            return int(await session.scalar(select(func.count()).where(EventRow.attempts > 1)) or 0)

    async def wait_processed(self, count: int, timeout: float = 90.0) -> Counter[str]:
        async def done() -> Counter[str] | None:
            statuses = await self.statuses()
            return statuses if statuses["processed"] >= count else None

        try:
            return await wait_until(done, timeout, what=f"{count} events processed")
        except AssertionError:
            raise AssertionError(f"statuses {dict(await self.statuses())}\n{self.logs()}") from None


def kill(proc: Proc) -> None:
    """SIGKILL: no clean-up of any kind."""
    proc.signal(signal.SIGKILL)


def elapsed_since(start: float) -> float:
    return round(time.monotonic() - start, 1)
