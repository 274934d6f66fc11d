"""The receiver's log line for each refused webhook: enough to answer "Dodo says delivered but
nothing happened" (status, reason, webhook-id, client address, and for a bad signature the
setting to check), never a body or a secret, and rate-limited so a flood of junk cannot fill
the disk: at most `burst` lines per `window` seconds, then one line saying how many were left out."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

log = logging.getLogger("dodo_worker.receiver")

HINTS = {
    "signature": "does DODO_PAYMENTS_WEBHOOK_KEY hold this endpoint's secret from Dodo's dashboard?",
    "timestamp": "is this machine's clock right? Dodo's retries are re-signed, replays of old ones are not",
}


def printable(value: str, limit: int = 255) -> str:
    """`value` cut to `limit` with control characters escaped: a header cannot forge a log line."""
    cut = value[:limit]
    return cut if cut.isprintable() else cut.encode("unicode_escape").decode("ascii")


class RateLimitedLog:
    """At most `burst` warnings per `window` seconds, then one line saying how many were left out."""

    what = "refusal"
    logger = log

    def __init__(self, burst: int = 20, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.window, self.clock = burst, window, clock
        self._window_started = clock()
        self._logged = 0
        self._left_out = 0

    def admit(self) -> bool:
        """True when one more line may be written now."""
        now = self.clock()
        if now - self._window_started >= self.window:
            if self._left_out:
                self.logger.warning("%d more %s(s) not logged in the last %ds", self._left_out, self.what,
                            round(now - self._window_started))
            self._window_started, self._logged, self._left_out = now, 0, 0
        if self._logged >= self.burst:
            self._left_out += 1
            return False
        self._logged += 1
        return True


class RefusalLog(RateLimitedLog):
    what = "webhook refusal"

    def refused(self, status: int, reason: str, message: str, webhook_id: str | None, client: str | None) -> None:
        if not self.admit():
            return
        hint = HINTS.get(reason)
        log.warning("webhook refused: %s %s (%s, webhook-id %s, from %s)%s", status, message, reason,
                    printable(webhook_id or "-"), printable(client or "-", 64), f"; {hint}" if hint else "")
