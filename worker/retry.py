"""Back-off between handler attempts: exponential, capped, with jitter."""

from __future__ import annotations

import random


def backoff_seconds(attempt: int, base: float, cap: float) -> float:
    """Delay before attempt `attempt + 1`: base * 2^(attempt-1), capped, then jittered to 50-100 %
    so that events failing together do not retry together."""
    delay = min(cap, base * (2 ** max(0, attempt - 1)))
    return delay * random.uniform(0.5, 1.0)
