"""Realistic webhook bodies, one for every event type the pinned `dodopayments` SDK defines, for
`dodo-worker send` and the tests (tests/test_samples.py checks each against the SDK's model)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SAMPLES = Path(__file__).resolve().parent


def sample_types() -> list[str]:
    return sorted(p.stem for p in SAMPLES.glob("*.json"))


def load_sample(event_type: str) -> dict[str, Any]:
    path = SAMPLES / f"{event_type}.json"
    if not path.exists():
        raise KeyError(event_type)
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def stamped_sample(event_type: str, now: datetime | None = None) -> dict[str, Any]:
    """The sample with its envelope `timestamp` set to `now` (default: this moment), in the
    samples' own form (ISO 8601 UTC with microseconds and `Z`), so it reads as a fresh event."""
    sample = load_sample(event_type)
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    sample["timestamp"] = moment.isoformat(timespec="microseconds").replace("+00:00", "Z")
    return sample
