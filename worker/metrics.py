"""Prometheus metrics that add up across every web and worker process.

prometheus-client keeps counters in the memory of one process (its multiprocess mode shares
files on one host only). dodo-worker runs several processes, often on several machines, and
`GET /metrics` on any web process should tell the whole story. So each process counts in
memory, flushes its deltas to one Redis hash every second (HINCRBYFLOAT: cheap, atomic), and
`/metrics` renders that hash with prometheus-client's own metric families and text format.
A Redis outage loses no counts: deltas wait in memory until the next successful flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("dodo_worker.metrics")

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
LAG_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

COUNTERS: dict[str, str] = {
    "dodo_webhooks_received_total": "Correctly signed webhooks stored, by result (accepted, duplicate).",
    "dodo_webhooks_rejected_total": "Webhooks refused, by reason.",
    "dodo_enqueue_failures_total": "Stored events that could not be put on the queue at once.",
    "dodo_events_processed_total": "Events whose handlers all succeeded, by type.",
    "dodo_events_ignored_total": "Events no handler matched, by type.",
    "dodo_handler_failures_total": "Handler runs that raised, by handler.",
    "dodo_events_dead_total": "Events that ran out of attempts, by type.",
    "dodo_license_requests_refused_total": "Licence route requests refused before the store, by reason.",
    "dodo_hook_deliveries_total": "Entitlement hook delivery attempts, by kind (url, python) and result.",
    "dodo_alerts_total": "Alert messages posted to ALERT_WEBHOOK_URL, by result (sent, failed).",
}
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "dodo_handler_duration_seconds": ("Time one handler run took, by handler.", DURATION_BUCKETS),
    "dodo_queue_lag_seconds": ("Time from receipt to the first processing attempt.", LAG_BUCKETS),
}
MAX_PENDING_FIELDS = 50_000

_HistogramFields = tuple[tuple[float, ...], list[str], str, str]  # bounds, bucket fields (+Inf last), sum, count


def _field(name: str, labels: Mapping[str, str]) -> str:
    label_text = ",".join(f"{k}={_clean(v)}" for k, v in sorted(labels.items()))
    return f"{name}|{label_text}"


def _clean(value: str) -> str:
    return str(value).replace(",", "_").replace("|", "_").replace("=", "_")[:200]


def _parse_field(field: str) -> tuple[str, dict[str, str]]:
    name, _, label_text = field.partition("|")
    labels = dict(part.split("=", 1) for part in label_text.split(",") if "=" in part)
    return name, labels


class SharedMetrics:
    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key
        self._pending: dict[str, float] = {}
        self._fields: dict[tuple[str, tuple[tuple[str, str], ...]], _HistogramFields] = {}
        self._task: asyncio.Task[None] | None = None

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._add(_field(name, labels), amount)

    def observe(self, name: str, value: float, **labels: str) -> None:
        bounds, buckets, total, count = self._histogram_fields(name, labels)
        for bound, bucket in zip(bounds, buckets, strict=False):  # the last field is +Inf
            if value <= bound:
                self._add(bucket, 1.0)
        self._add(buckets[-1], 1.0)
        self._add(total, value)
        self._add(count, 1.0)

    def _histogram_fields(self, name: str, labels: Mapping[str, str]) -> _HistogramFields:
        """The field names of one histogram series, built once: a worker observes two per event."""
        key = (name, tuple(sorted(labels.items())))
        fields = self._fields.get(key)
        if fields is None:
            bounds = HISTOGRAMS[name][1]
            buckets = [_field(f"{name}_bucket", {**labels, "le": str(bound)}) for bound in (*bounds, "+Inf")]
            fields = (bounds, buckets, _field(f"{name}_sum", labels), _field(f"{name}_count", labels))
            if len(self._fields) < MAX_PENDING_FIELDS:
                self._fields[key] = fields
        return fields

    def _add(self, key: str, amount: float) -> None:
        if key in self._pending or len(self._pending) < MAX_PENDING_FIELDS:
            self._pending[key] = self._pending.get(key, 0.0) + amount

    async def flush(self) -> None:
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for field, amount in batch.items():
                    pipe.hincrbyfloat(self.key, field, amount)
                await pipe.execute()
        except (RedisError, OSError, TimeoutError):
            for key, amount in batch.items():  # try again next time
                self._pending[key] = self._pending.get(key, 0.0) + amount

    def start(self, interval: float = 1.0) -> None:
        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                await self.flush()

        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def snapshot(self) -> dict[str, float]:
        raw: dict[bytes, bytes] = await self.redis.hgetall(self.key)  # type: ignore[misc]
        return {k.decode(): float(v) for k, v in raw.items()}


class _Snapshot(Collector):
    def __init__(self, values: Mapping[str, float], gauges: Iterable[GaugeMetricFamily]) -> None:
        self.values = values
        self.gauges = list(gauges)

    def collect(self) -> Iterable[CounterMetricFamily | HistogramMetricFamily | GaugeMetricFamily]:
        parsed = [(*_parse_field(field), value) for field, value in self.values.items()]
        for name, help_text in COUNTERS.items():
            series = [(labels, v) for n, labels, v in parsed if n == name]
            label_names = sorted({k for labels, _ in series for k in labels})
            family = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=label_names)
            for labels, value in series:
                family.add_metric([labels.get(k, "") for k in label_names], value)
            yield family
        for name, (help_text, _) in HISTOGRAMS.items():
            yield from _histograms(name, help_text, parsed)
        yield from self.gauges


def _histograms(
    name: str, help_text: str, parsed: list[tuple[str, dict[str, str], float]]
) -> Iterable[HistogramMetricFamily]:
    groups: dict[tuple[tuple[str, str], ...], dict[str, object]] = {}
    for series_name, labels, value in parsed:
        if not series_name.startswith(name + "_"):
            continue
        le = labels.pop("le", None)
        group = groups.setdefault(tuple(sorted(labels.items())), {"buckets": {}, "sum": 0.0})
        suffix = series_name[len(name) + 1:]
        if suffix == "bucket" and le is not None:
            group["buckets"][le] = value  # type: ignore[index]
        elif suffix == "sum":
            group["sum"] = value
    label_names = sorted({k for key in groups for k, _ in key})
    family = HistogramMetricFamily(name, help_text, labels=label_names)
    for key, group in groups.items():
        labels = dict(key)
        buckets_seen: dict[str, float] = group["buckets"]  # type: ignore[assignment]
        ordered = sorted(buckets_seen.items(), key=lambda kv: float("inf") if kv[0] == "+Inf"
                         else float(kv[0]))
        family.add_metric([labels.get(k, "") for k in label_names], ordered,
                          sum_value=float(group["sum"]))  # type: ignore[arg-type]
    yield family


def render(values: Mapping[str, float], gauges: Iterable[GaugeMetricFamily]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(values, gauges))
    return generate_latest(registry)
