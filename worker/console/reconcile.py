"""The reconciliation page of the console: runs and their reports, "Dry run" and "Run now".

Both run in the background of the web process, as the worker's scheduled scan does
(`worker.reconcile.job.Reconciler`): "Run now" takes the same Redis lease (a scan running
anywhere makes it `skipped`) and records its run; a dry run reads only, takes no lease and is
not recorded, so its report is kept in this process (the last few) for the page to show."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from litestar import Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException
from litestar.params import FromQuery
from litestar.types import ControllerRouterHandler

from integrations.dodo import DodoAPIError, DodoReader, create_client
from worker.console import audit
from worker.console.params import Form, SignedIn
from worker.console.render import render, see_other
from worker.reconcile import state as run_state
from worker.reconcile.job import RESOURCE, SETTLE, Reconciler, attach
from worker.reconcile.service import EmptyWindow, begin, execute
from worker.reconcile.service import Request as ScanRequest
from worker.runtime import Runtime
from worker.store.models import utcnow

TRIGGER = "console"
DRY_RUNS = "console_dry_runs"
KEEP_DRY_RUNS = 5


def reconciler(runtime: Runtime) -> Reconciler | None:
    """The web process's Reconciler, made on first use (None without DODO_PAYMENTS_API_KEY).
    Put in resources before its Dodo client, so closing the runtime stops a scan first."""
    if runtime.settings.DODO_PAYMENTS_API_KEY is None:
        return None
    if RESOURCE not in runtime.resources:
        attach(runtime)
        runtime.resources.setdefault("dodo", create_client(runtime.settings))
    found = runtime.resources.get(RESOURCE)
    return found if isinstance(found, Reconciler) else None


@dataclass
class DryRun:
    id: int
    operator: str
    started_at: datetime
    status: str = "running"  # running, ok, failed
    report: dict[str, Any] | None = None
    error: str | None = None


@dataclass
class DryRuns:
    """The dry runs this process started: the last few, newest first; stopped when it closes."""

    runs: list[DryRun] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    numbers: Any = field(default_factory=lambda: itertools.count(1))

    def start(self, runtime: Runtime, operator: str) -> DryRun:
        run = DryRun(next(self.numbers), operator, utcnow())
        self.runs = [run, *self.runs][:KEEP_DRY_RUNS]
        task = asyncio.create_task(self._scan(runtime, run), name="dodo-worker console dry run")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return run

    async def _scan(self, runtime: Runtime, run: DryRun) -> None:
        client = runtime.resources["dodo"]
        try:
            begun = await begin(runtime.settings, runtime.db, None,
                                ScanRequest(trigger=TRIGGER, dry_run=True, settle=SETTLE))
            report = await execute(begun, runtime.settings, runtime.db, DodoReader(client))
        except (DodoAPIError, EmptyWindow) as exc:
            run.status, run.error = "failed", str(exc)
        except Exception as exc:  # the page says it failed; the log has the rest
            run.status, run.error = "failed", type(exc).__name__
            raise
        else:
            run.status, run.report = "ok", report.as_json()

    async def aclose(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self.tasks, return_exceptions=True)


def dry_runs(runtime: Runtime) -> DryRuns:
    found = runtime.resources.setdefault(DRY_RUNS, DryRuns())
    assert isinstance(found, DryRuns)
    return found


def _summary(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@get(["/reconcile", "/reconciliation"])
async def reconcile_page(request: Request, operator: SignedIn, state: State,
                         outcome: FromQuery[str] = "") -> Response[Any]:
    runtime: Runtime = state.runtime
    runs = await run_state.recent_runs(runtime.db, limit=20)
    return render(request, "reconcile.html", runs=[(run, _summary(run.summary)) for run in runs],
                  dry_runs=dry_runs(runtime).runs, enabled=runtime.settings.DODO_PAYMENTS_API_KEY is not None,
                  running=any(run.status == "running" for run in runs) or any(
                      run.status == "running" for run in dry_runs(runtime).runs),
                  notice=OUTCOMES.get(outcome, ""), title="Reconciliation")


OUTCOMES = {"started": "A scan started: its run appears below and ends ok, failed or interrupted.",
            "skipped": "Another scan is running (a worker's scheduled one?): this one was skipped.",
            "dry-run": "A dry run started: it reports what is missing and repairs nothing."}


def _enabled(state: State) -> tuple[Runtime, Reconciler]:
    runtime: Runtime = state.runtime
    found = reconciler(runtime)
    if found is None:
        raise HTTPException(status_code=409, detail="reconciliation is disabled: DODO_PAYMENTS_API_KEY is not set")
    return runtime, found


@post("/reconcile/run")
async def run_now(state: State, operator: SignedIn, form: Form) -> Response[Any]:
    runtime, found = _enabled(state)
    outcome = await found.start(TRIGGER)
    await audit.record(runtime.db, operator, "reconcile.run", "", outcome)
    return see_other(f"/console/reconcile?outcome={outcome}")


@post("/reconcile/dry-run")
async def dry_run(state: State, operator: SignedIn, form: Form) -> Response[Any]:
    runtime, _ = _enabled(state)  # makes the Dodo client the dry run reads through
    run = dry_runs(runtime).start(runtime, operator.name)
    await audit.record(runtime.db, operator, "reconcile.dry_run", "", f"dry run {run.id}")
    return see_other("/console/reconcile?outcome=dry-run")


ROUTES: list[ControllerRouterHandler] = [reconcile_page, run_now, dry_run]
