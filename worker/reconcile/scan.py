"""One reconciliation scan: read Dodo's lists in a window, find what the inbox lacks, repair it.

For each source (payments, refunds, lost and accepted disputes, subscriptions), page by page
from page 0 with 100 items a page until a short or empty page:

1. one SQL query per page finds which of the page's objects already have their event in the
   inbox (`events.type` + `events.object_id`, whatever webhook id carried it);
2. an event that exists in any state but `dead` counts: `received`/`queued`/`failed` ones will
   still be processed, so a synthetic copy would only run the handlers twice. A `dead` one is
   a different problem (a handler keeps failing): it is reported, not duplicated. (Accepted
   disputes whose events all settled `ignored`, from before a handler took them, are repaired:
   `Source.redo_ignored`);
3. for each object with no event, the full object is fetched (`GET /payments/{id}`...) and a
   synthetic event (`source` `reconcile`, a deterministic id) is inserted, in one statement
   per page, and queued; the same handlers then run as for a webhook.

So the API calls of a scan are pages + missing objects, and SQL work is one lookup per page
plus one insert per page with anything missing: cost grows with the window, not with history.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from arq.connections import ArqRedis
from sqlalchemy import select

from integrations.dodo import PAGE_SIZE, DodoNotFound, DodoReader
from worker import queue
from worker.entitlements.models import GrantStatus
from worker.reconcile.drift import granted_subscriptions
from worker.reconcile.sources import (
    ALL_SOURCES,
    ENDED_STATUSES,
    SUBSCRIPTION_EVENTS,
    SUBSCRIPTIONS,
    Source,
    synthetic_event_id,
)
from worker.store import Database, EventRow, EventSource, EventStatus
from worker.store.inbox import NewEvent, insert_events

log = logging.getLogger("dodo_worker.reconcile")

Progress = Callable[[str, int, int], None]  # kind, objects scanned so far in it, pages read
PageHook = Callable[[], Awaitable[None]]
FETCH_CONCURRENCY = 4  # full-object fetches in flight at once


@dataclass
class Repaired:
    kind: str
    id: str
    event_id: str
    metadata: dict[str, Any]
    event_type: str = ""


@dataclass
class ScanReport:
    since: datetime
    until: datetime
    dry_run: bool = False
    metadata_filter: dict[str, str] = field(default_factory=dict)
    scanned: int = 0
    scanned_by_kind: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    repaired: list[Repaired] = field(default_factory=list)
    dead: list[dict[str, str]] = field(default_factory=list)  # events that exist but are dead
    pending: int = 0  # objects whose event exists but is not processed yet (it will be)
    not_enqueued: int = 0  # inserted while Redis was unreachable: the sweeper queues them
    # 404 when fetched: listed, or granted here (drift check); `why` says which
    not_found: list[dict[str, str]] = field(default_factory=list)
    api_calls: int = 0
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "scanned": self.scanned,
            "repaired": [{"kind": r.kind, "id": r.id, "event_id": r.event_id, "type": r.event_type,
                          "metadata": r.metadata} for r in self.repaired],
            "dead": self.dead,
            "pending": self.pending,
            "scanned_by_kind": self.scanned_by_kind,
            "window": {"since": iso(self.since), "until": iso(self.until)},
            "dry_run": self.dry_run,
            "metadata_filter": self.metadata_filter,
            "api_calls": self.api_calls,
            "not_enqueued": self.not_enqueued,
            "not_found": self.not_found,
            "seconds": round(self.seconds, 3),
        }


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def metadata_matches(metadata: Any, wanted: dict[str, str]) -> bool:
    if not wanted:
        return True
    if not isinstance(metadata, dict):
        return False
    return all(key in metadata and _text(metadata[key]) == value for key, value in wanted.items())


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass
class _Existing:
    """What the inbox holds for one object: its events' statuses, ids, and (subscriptions) the
    status carried by the latest one."""

    statuses: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)
    latest_id: str | None = None
    latest_status: str | None = None
    latest_payload_status: str | None = None

    @property
    def only_ignored(self) -> bool:
        return all(status == EventStatus.IGNORED for status in self.statuses)


class Scanner:
    def __init__(self, db: Database, reader: DodoReader, *, redis: ArqRedis | None = None,
                 queue_name: str = "", dry_run: bool = False, metadata: dict[str, str] | None = None,
                 progress: Progress | None = None, on_page: PageHook | None = None) -> None:
        self.db = db
        self.reader = reader
        self.redis = redis
        self.queue_name = queue_name
        self.dry_run = dry_run
        self.metadata = dict(metadata or {})
        self.progress = progress
        self.on_page = on_page
        # payment_id -> metadata of payments seen (refunds and disputes report their order's).
        self._payment_metadata: dict[str, dict[str, Any]] = {}
        self._seen: dict[str, set[str]] = {}  # kind -> ids listed in the window

    async def scan(self, since: datetime, until: datetime,
                   sources: Sequence[Source] = ALL_SOURCES) -> ScanReport:
        import time

        started = time.perf_counter()
        calls_before = self.reader.calls
        report = ScanReport(since=since, until=until, dry_run=self.dry_run, metadata_filter=self.metadata)
        for source in sources:
            await self._scan_source(source, report)
        if SUBSCRIPTIONS in sources:
            await self._check_granted_subscriptions(report)
        report.api_calls = self.reader.calls - calls_before
        report.seconds = time.perf_counter() - started
        return report

    # listing -------------------------------------------------------------------------------
    async def _scan_source(self, source: Source, report: ScanReport) -> None:
        """Visit every page of the window. If the API stops paging deeper (Dodo caps
        `page_number` for payments, value unpublished) and serves a page we already saw, the
        window's upper end moves down to the oldest object seen and paging starts again."""
        seen = self._seen.setdefault(source.kind, set())
        upper = report.until
        page_number = 0
        count = 0
        report.scanned_by_kind.setdefault(source.kind, 0)
        while True:
            items = await self.reader.list_page(
                source.list_path, page_number, PAGE_SIZE,
                created_at_gte=iso(report.since), created_at_lte=iso(upper), **source.filters)
            report.pages += 1
            fresh = []
            for item in items:
                object_id = source.object_id(item)
                if object_id is not None and object_id not in seen:
                    seen.add(object_id)
                    fresh.append(item)
            count += len(fresh)
            report.scanned += len(fresh)
            report.scanned_by_kind[source.kind] += len(fresh)
            if fresh:
                await self._handle_page(source, fresh, report)
            if self.progress is not None:
                self.progress(source.kind, count, page_number + 1)
            if self.on_page is not None:
                await self.on_page()
            if len(items) < PAGE_SIZE:
                return
            if not fresh:
                oldest = _oldest_created_at(items)
                if oldest is None or oldest >= upper:
                    log.warning("%s: page %d repeats earlier pages; stopping here", source.list_path,
                                page_number)
                    return
                log.info("%s: paging capped at page %d; narrowing the window to before %s",
                         source.list_path, page_number, iso(oldest))
                upper, page_number = oldest, 0
                continue
            page_number += 1

    async def _check_granted_subscriptions(self, report: ScanReport) -> None:
        """Subscriptions we grant for, created before the window: is Dodo's status still theirs?
        (see drift.py). Costs nothing when no subscription has a live grant."""
        window_seen = self._seen.get(SUBSCRIPTIONS.kind, set())
        ours = {sid: status for sid, status in (await granted_subscriptions(self.db)).items()
                if sid not in window_seen}
        if not ours:
            return
        active: dict[str, dict[str, Any]] = {}
        listed: set[str] = set()
        page_number = 0
        while True:
            items = await self.reader.list_page(SUBSCRIPTIONS.list_path, page_number, PAGE_SIZE, status="active")
            report.pages += 1
            fresh = [(sid, item) for item in items
                     if (sid := SUBSCRIPTIONS.object_id(item)) is not None and sid not in listed]
            listed.update(sid for sid, _ in fresh)
            active.update((sid, item) for sid, item in fresh if sid in ours)
            if self.progress is not None:
                self.progress("active subscription", len(listed), page_number + 1)
            if self.on_page is not None:
                await self.on_page()
            if len(items) < PAGE_SIZE or not fresh:
                break
            page_number += 1
        # Active in Dodo but suspended here: the list item says enough. Not active in Dodo but
        # granted here: fetch it to learn what it is now.
        to_check = [active[sid] for sid, status in ours.items()
                    if sid in active and status != GrantStatus.ACTIVE]
        elsewhere = [sid for sid in ours if sid not in active]
        fetched = await self._fetch_all([SUBSCRIPTIONS.detail_path.format(id=sid) for sid in elsewhere])
        for sid, obj in zip(elsewhere, fetched, strict=True):
            if obj is None:
                _unknown_to_dodo(sid, report)
            else:
                to_check.append(obj)
        read = len(listed) + len(elsewhere)  # disjoint: a listed one of ours is in `active`
        report.scanned += read
        report.scanned_by_kind[SUBSCRIPTIONS.kind] = report.scanned_by_kind.get(SUBSCRIPTIONS.kind, 0) + read
        if to_check:
            await self._handle_page(SUBSCRIPTIONS, to_check, report)

    # one page ------------------------------------------------------------------------------
    async def _handle_page(self, source: Source, items: list[dict[str, Any]], report: ScanReport) -> None:
        if source.kind == "payment":
            for item in items:
                pid = source.object_id(item)
                if pid is not None and isinstance(item.get("metadata"), dict):
                    self._payment_metadata[pid] = item["metadata"]
        wanted = [item for item in items if self._selected(source, item)]
        if not wanted:
            return
        ids = [oid for oid in (source.object_id(i) for i in wanted) if oid is not None]
        existing = await self._existing(source, ids)
        repairs: list[tuple[str, str, str | None, dict[str, Any]]] = []  # event type, id, discriminator, item
        for item in wanted:
            object_id = source.object_id(item)
            if object_id is None:
                continue
            found = existing.get(object_id)
            if source.event_type is not None:
                event_type = source.event_type
                discriminator = None
                if found is not None and not (source.redo_ignored and found.only_ignored):
                    self._note_existing(source, object_id, found, report)
                    continue
            else:
                decision = self._subscription_decision(item, found, report, source)
                if decision is None:
                    continue
                event_type, discriminator = decision
            repairs.append((event_type, object_id, discriminator, item))
        if not repairs:
            return

        if self.dry_run:  # report what a real run would create; fetch and write nothing
            for event_type, object_id, discriminator, item in repairs:
                event_id = synthetic_event_id(event_type, object_id, discriminator)
                report.repaired.append(Repaired(source.kind, object_id, event_id,
                                                self._report_metadata(source, item), event_type))
            return
        fulls = await self._fetch_all([source.detail_path.format(id=object_id) for _, object_id, _, _ in repairs])
        new_events: list[NewEvent] = []
        pending_report: dict[str, Repaired] = {}
        for (event_type, object_id, discriminator, item), full in zip(repairs, fulls, strict=True):
            if full is None:
                # Listed but gone (deleted, or another business's): skip it rather than fail
                # every scan of this window.
                log.warning("%s %s: 404 when fetched although %s lists it; skipped", source.kind, object_id,
                            source.list_path)
                report.not_found.append({"kind": source.kind, "id": object_id, "why": "listed, but 404 when fetched"})
                continue
            event_id = synthetic_event_id(event_type, object_id, discriminator)
            data = {**item, **full}
            data.setdefault("payload_type", source.payload_type)
            timestamp = iso(datetime.now(UTC))
            envelope = {"business_id": data.get("business_id"), "type": event_type, "timestamp": timestamp,
                        "data": data}
            business_id = data.get("business_id")
            new_events.append(NewEvent(
                id=event_id, type=event_type, body=json.dumps(envelope), source=EventSource.RECONCILE,
                object_id=object_id[:128], business_id=business_id if isinstance(business_id, str) else None,
                occurred_at=timestamp))
            pending_report[event_id] = Repaired(source.kind, object_id, event_id,
                                                self._report_metadata(source, data), event_type)
        if not new_events:
            return
        inserted = await insert_events(self.db, new_events)
        # Keep the API's order (payments before their refunds) when queueing.
        created = [e.id for e in new_events if e.id in inserted]
        report.repaired.extend(pending_report[i] for i in created)
        if created:
            log.info("repaired %d missing %s event(s)", len(created), source.kind)
            await self._enqueue(created, report)

    async def _fetch_all(self, paths: list[str]) -> list[dict[str, Any] | None]:
        """The full objects, FETCH_CONCURRENCY requests at a time (in the order asked): against
        the real API each is a round trip, and a page may hold 100 missing objects. None where
        Dodo answers 404 (the caller says what that means)."""
        gate = asyncio.Semaphore(FETCH_CONCURRENCY)

        async def fetch(path: str) -> dict[str, Any] | None:
            async with gate:
                try:
                    return await self.reader.retrieve(path)
                except DodoNotFound:
                    return None

        try:
            async with asyncio.TaskGroup() as group:  # one failure cancels the other fetches
                tasks = [group.create_task(fetch(path)) for path in paths]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        return [task.result() for task in tasks]

    def _selected(self, source: Source, item: dict[str, Any]) -> bool:
        """With --metadata: payments and subscriptions by their own metadata; refunds and
        disputes by their own or their payment's (an order's refund belongs to the order)."""
        if not self.metadata:
            return True
        if metadata_matches(item.get("metadata"), self.metadata):
            return True
        if source.kind in ("refund", "dispute"):
            payment = self._payment_metadata.get(str(item.get("payment_id")))
            return metadata_matches(payment, self.metadata)
        return False

    def _report_metadata(self, source: Source, item: dict[str, Any]) -> dict[str, Any]:
        own = item.get("metadata")
        if isinstance(own, dict) and own:
            return own
        if source.kind in ("refund", "dispute"):
            return dict(self._payment_metadata.get(str(item.get("payment_id")), {}))
        return {}

    def _note_existing(self, source: Source, object_id: str, found: _Existing, report: ScanReport) -> None:
        live = [s for s in found.statuses if s != EventStatus.DEAD]
        if not live:
            report.dead.append({"kind": source.kind, "id": object_id, "event_id": found.event_ids[0]})
        elif not any(s in (EventStatus.PROCESSED, EventStatus.IGNORED) for s in live):
            report.pending += 1

    def _subscription_decision(self, item: dict[str, Any], found: _Existing | None, report: ScanReport,
                               source: Source) -> tuple[str, str] | None:
        """The event to inject when Dodo's status differs from the latest one the inbox knows."""
        status = item.get("status")
        event_type = SUBSCRIPTION_EVENTS.get(status) if isinstance(status, str) else None
        if event_type is None:
            return None
        object_id = source.object_id(item) or ""
        if found is None:
            if status in ENDED_STATUSES:
                return None
            return event_type, "0"
        if found.latest_payload_status == status:
            if found.latest_status == EventStatus.DEAD:
                report.dead.append({"kind": source.kind, "id": object_id, "event_id": found.latest_id or ""})
            elif found.latest_status not in (EventStatus.PROCESSED, EventStatus.IGNORED):
                report.pending += 1
            return None
        # Bound to the latest event we know, so the same gap is repaired once, and a later
        # change of status (active -> on_hold -> active) gets an event of its own.
        return event_type, hashlib.sha1((found.latest_id or "").encode()).hexdigest()[:10]  # noqa: S324

    # SQL -----------------------------------------------------------------------------------
    async def _existing(self, source: Source, object_ids: list[str]) -> dict[str, _Existing]:
        """One query per page: the events the inbox holds for these objects."""
        found: dict[str, _Existing] = defaultdict(_Existing)
        if source.event_type is not None:
            by_type = select(EventRow.object_id, EventRow.id, EventRow.status).where(
                EventRow.type == source.event_type, EventRow.object_id.in_(object_ids))
            async with self.db.sessions() as session:
                for object_id, event_id, status in (await session.execute(by_type)).all():
                    entry = found[object_id or ""]
                    entry.statuses.append(status)
                    entry.event_ids.append(event_id)
            return dict(found)
        prefix = source.kind + "."
        query = (
            select(EventRow.object_id, EventRow.id, EventRow.status, EventRow.body)
            .where(EventRow.type.startswith(prefix, autoescape=True), EventRow.object_id.in_(object_ids))
            .order_by(EventRow.received_at, EventRow.id)
        )
        async with self.db.sessions() as session:
            for object_id, event_id, status, body in (await session.execute(query)).all():
                entry = found[object_id or ""]
                entry.statuses.append(status)
                entry.event_ids.append(event_id)
                entry.latest_id, entry.latest_status = event_id, status
                entry.latest_payload_status = _payload_status(body)
        return dict(found)

    async def _enqueue(self, event_ids: list[str], report: ScanReport) -> None:
        if self.redis is None or not await queue.enqueue_events(self.redis, self.queue_name, event_ids):
            report.not_enqueued += len(event_ids)


def _unknown_to_dodo(subscription_id: str, report: ScanReport) -> None:
    """A subscription granted here that Dodo answers 404 for: reported, its grants left alone.
    A 404 is as likely a key of another business or mode (a test-mode key reading live grants
    would 404 every one) as a subscription really gone; revoking on it could take access from
    every paying customer at once, and there is no status to follow. The operator decides."""
    log.warning("subscription %s is granted here but Dodo does not know it (404); its grants are left as they are",
                subscription_id)
    report.not_found.append({"kind": SUBSCRIPTIONS.kind, "id": subscription_id,
                             "why": "granted here, but Dodo does not know it"})


def _payload_status(body: str) -> str | None:
    try:
        data = json.loads(body).get("data")
    except (ValueError, AttributeError):
        return None
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) else None


def _oldest_created_at(items: list[dict[str, Any]]) -> datetime | None:
    moments = []
    for item in items:
        try:
            moments.append(datetime.fromisoformat(str(item.get("created_at"))))
        except ValueError:
            continue
    return min(moments) if moments else None


__all__ = ["Repaired", "ScanReport", "Scanner", "metadata_matches"]
