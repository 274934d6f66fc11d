"""The worker's resolution check (an arq cron job every ALERT_CHECK_SECONDS): each open incident
whose condition has cleared is closed, silently. Reconciliation incidents close at the next scan
and hook incidents also when their endpoint delivers again (worker/alerts/notify.py)."""

from __future__ import annotations

import logging
from typing import Any

from arq.cron import cron
from sqlalchemy import exists, select

from worker.alerts.incidents import Incident
from worker.alerts.notify import Alerter, alerter
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import EventRow, EventStatus, HandlerRunRow, RunStatus

log = logging.getLogger("dodo_worker.alerts")


async def still_open(runtime: Runtime, alerts: Alerter, incident: Incident) -> bool:
    if incident.kind == "dead":
        query = select(exists().where(EventRow.status == EventStatus.DEAD, HandlerRunRow.event_id == EventRow.id,
                                      HandlerRunRow.handler == incident.subject,
                                      HandlerRunRow.status == RunStatus.DEAD))
    elif incident.kind == "hook":
        from worker.entitlements.models import DeliveryRow, DeliveryStatus

        query = select(exists().where(DeliveryRow.status == DeliveryStatus.FAILED,
                                      DeliveryRow.target == incident.subject))
    elif incident.kind == "signatures":
        return await alerts.rejections.rate() >= runtime.settings.ALERT_REJECTIONS_THRESHOLD / 2
    else:
        return True
    async with runtime.db.sessions() as session:
        return bool(await session.scalar(query))


async def check_incidents(runtime: Runtime) -> int:
    """Close the incidents that are over; how many were."""
    alerts = alerter(runtime)
    closed = 0
    for incident in await alerts.incidents.all_open():
        if not await still_open(runtime, alerts, incident) and await alerts.incidents.close(incident.id,
                                                                                            incident.seen):
            log.info("alert incident %s resolved", incident.kind)
            closed += 1
    return closed


async def check_job(ctx: dict[str, Any]) -> int:
    return await check_incidents(ctx["runtime"])


def cron_jobs(settings: Settings) -> list[Any]:
    if settings.ALERT_WEBHOOK_URL is None:
        return []
    return [cron(check_job, name=f"{settings.QUEUE_NAME}:alerts", unique=True, run_at_startup=False,
                 second=set(range(0, 60, settings.ALERT_CHECK_SECONDS)), timeout=30)]
