"""Process-wide resources handlers use (`ctx.resources`), opened when a worker starts.

Features that need their own clients or cron jobs (the Dodo API, entitlements, reconciliation)
register them here so the worker and `dev` get them without knowing each feature.
"""

from __future__ import annotations

from typing import Any

from worker.runtime import Runtime
from worker.settings import Settings


async def open_resources(runtime: Runtime) -> None:
    return None


def extra_cron_jobs(settings: Settings) -> list[Any]:
    return []
