"""Python hooks: a merchant's own function told of every grant change, like a custom hook URL.

    from worker import on_entitlement

    @on_entitlement("entitlement.granted", "entitlement.revoked")
    async def sync_crm(event_type: str, grant: dict) -> None:
        ...

They are delivered from the same outbox as URL hooks (target `python:<module>.<name>`), so a
raising hook is retried with back-off and a change is never lost; make them idempotent on
`grant["id"]` and `event_type`.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from worker.registry import RegistryError, pattern_matches

HookFunc = Callable[[str, dict[str, Any]], Awaitable[None]]

EVENT_TYPES = ("entitlement.granted", "entitlement.revoked", "entitlement.suspended", "entitlement.resumed",
               "entitlement.updated")

_hooks: dict[str, tuple[HookFunc, tuple[str, ...]]] = {}


def on_entitlement(*patterns: str) -> Callable[[HookFunc], HookFunc]:
    """Register `async def f(event_type, grant)` for the given types (default: all; `*` works)."""
    chosen = patterns or ("*",)

    def decorator(func: HookFunc) -> HookFunc:
        if not inspect.iscoroutinefunction(func):
            raise RegistryError(f"entitlement hook {func.__qualname__} must be `async def`")
        name = f"{func.__module__}.{func.__qualname__}"
        existing = _hooks.get(name)
        if existing is not None and existing[0] is not func:
            raise RegistryError(f"two entitlement hooks are named {name}")
        _hooks[name] = (func, chosen)
        return func

    return decorator


def targets_for(event_type: str) -> list[str]:
    """Outbox targets (`python:<name>`) of the registered hooks that want this event type."""
    return [f"python:{name}" for name, (_, patterns) in _hooks.items()
            if any(pattern_matches(p, event_type) for p in patterns)]


def get(target: str) -> HookFunc | None:
    entry = _hooks.get(target.removeprefix("python:"))
    return entry[0] if entry is not None else None


def remove(name: str) -> None:
    """Unregister (tests)."""
    _hooks.pop(name.removeprefix("python:"), None)
