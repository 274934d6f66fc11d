"""`ctx`, the second argument of every handler."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from worker.settings import Settings

if TYPE_CHECKING:
    from dodopayments import AsyncDodoPayments


@dataclass
class Context:
    """What a handler may use.

    - `session`: a SQL session inside a transaction that commits only if the handler returns,
      together with the record that the handler succeeded (so a success is never run twice);
    - `dodo`: the Dodo API client (`AsyncDodoPayments`), or None when no API key is set;
    - `settings`, `log` (bound to the event id and handler), `attempt` (1, 2, ...);
    - `idempotency_key`: stable across every attempt of this handler on this event; pass it to
      outside systems that deduplicate;
    - `resources`: process-wide objects (HTTP clients, the entitlements catalog, ...);
    - `note(text)`: say on the event what the handler chose not to do and why (`events show`).
    """

    session: AsyncSession
    settings: Settings
    log: logging.LoggerAdapter
    event_id: str
    handler: str
    attempt: int
    resources: dict[str, Any] = field(default_factory=dict)

    @property
    def idempotency_key(self) -> str:
        return f"{self.event_id}:{self.handler}"

    def note(self, text: str) -> None:
        """Record `text` on this handler's attempt (shown by `events show`, logged once it
        commits): a handler that skips an event should say so rather than return silently."""
        from worker.store import inbox

        inbox.add_note(self.session, self.event_id, text)

    @property
    def dodo(self) -> AsyncDodoPayments | None:
        return self.resources.get("dodo")
