"""Realistic webhook bodies, one per common event type, for `dodo-worker send` and the tests."""

from __future__ import annotations

import json
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
