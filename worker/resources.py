"""Extension points for features that need process-wide objects, arq functions or cron jobs.

The worker (and `dev`) call these, so a feature (entitlements, reconciliation) plugs in here
without `worker/jobs.py` knowing about it. Keep each feature's part to a line or two that calls
into the feature's own module.
"""

from __future__ import annotations

from typing import Any

from worker.runtime import Runtime
from worker.settings import Settings


async def open_resources(runtime: Runtime) -> None:
    """Fill `runtime.resources` (seen by handlers as `ctx.resources`) when a worker starts.
    Anything with `aclose()`/`close()` is closed when the runtime closes."""
    from integrations.dodo import create_client
    from worker.alerts import attach as attach_alerts
    from worker.entitlements.catalog import load_catalog
    from worker.entitlements.outbox import log_hook_status
    from worker.reconcile.job import attach as attach_reconciler

    runtime.resources.setdefault("catalog", load_catalog(runtime.settings.entitlements_path))
    log_hook_status(runtime.settings, runtime.resources["catalog"])
    attach_alerts(runtime)
    if (dodo := create_client(runtime.settings)) is not None:
        attach_reconciler(runtime)  # before "dodo": closing stops a running scan before its client
        runtime.resources["dodo"] = dodo  # ctx.dodo; reconciliation reads through it too
    return None


def check_config(settings: Settings) -> None:
    """Checks a process runs before it starts serving: raise ConfigError (one line) on a bad
    catalog, so `web`, `worker` and `dev` stop at once with the file, the line and the problem."""
    from worker.entitlements.catalog import load_catalog

    load_catalog(settings.entitlements_path)


def extra_functions(settings: Settings) -> list[Any]:
    """More arq job functions (`arq.worker.func(...)`) the worker should run."""
    return []


def extra_cron_jobs(settings: Settings) -> list[Any]:
    """More arq cron jobs (`arq.cron.cron(...)`); give them unique=True and a name prefixed by
    settings.QUEUE_NAME so that stacks sharing a Redis do not block each other."""
    from worker.alerts.check import cron_jobs as alerts_cron_jobs
    from worker.entitlements.sender import cron_jobs as hooks_cron_jobs
    from worker.reconcile.job import cron_jobs as reconcile_cron_jobs

    return [*reconcile_cron_jobs(settings), *hooks_cron_jobs(settings), *alerts_cron_jobs(settings)]
