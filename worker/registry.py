"""The handler registry and the `@on(...)` decorator.

    from worker import on

    @on("payment.succeeded")
    async def send_receipt(event, ctx): ...

Patterns are exact types (`payment.succeeded`), prefix wildcards (`subscription.*`) or `*`.
Registration happens at import time, so mistakes (a sync function, a name used twice, a
malformed pattern, an event type the pinned SDK does not define) stop the process at start with
a message that names the culprit.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from worker.context import Context
    from worker.events import Event

HandlerFunc = Callable[["Event", "Context"], Awaitable[Any]]
# Called once per batch, before a batched handler runs for its events: (events, session).
PrepareFunc = Callable[[list["Event"], "AsyncSession"], Awaitable[None]]
# In a batch's session.info while `prepare` runs: the worker's resources (what `ctx.resources` holds).
RESOURCES = "dodo_worker.resources"

_PATTERN = re.compile(r"^(\*|[a-z0-9_]+\.\*|[a-z0-9_]+\.[a-z0-9_]+)$")


class RegistryError(Exception):
    """A handler could not be registered or a handler module could not be loaded."""


@dataclass(frozen=True)
class Handler:
    name: str
    func: HandlerFunc
    patterns: tuple[str, ...]
    # Runs with other events' batched handlers in one transaction (each in its own savepoint):
    # for handlers that only work in SQL through `ctx.session`, never ones that wait on the
    # network (they would hold the batch's transaction open and run one after another).
    batched: bool = False
    prepare: PrepareFunc | None = None

    def matches(self, event_type: str) -> bool:
        return any(pattern_matches(p, event_type) for p in self.patterns)


def pattern_matches(pattern: str, event_type: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        return event_type.startswith(pattern[:-1])
    return pattern == event_type


class Registry:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def on(self, *patterns: str, name: str | None = None, batched: bool = False,
           prepare: PrepareFunc | None = None, known_type: bool = True) -> Callable[[HandlerFunc], HandlerFunc]:
        """Register the decorated `async def f(event, ctx)` for the given event type patterns.

        `batched=True`: the handler only works in SQL (`ctx.session`), so under load the worker
        may run it for many events in one transaction (much faster); if one of them raises, the
        transaction is rolled back and each event runs again on its own. `prepare(events,
        session)`, for a batched handler, runs first in that transaction, once per batch: to
        take locks or read rows for all its events in one statement (`session.info[RESOURCES]`
        holds the worker's resources). `known_type=False` accepts an event type (or group) that
        the pinned SDK does not define yet; otherwise such a type is taken for a typo."""
        if prepare is not None and not batched:
            raise RegistryError("@on(..., prepare=...) needs batched=True: it runs once per batch")
        if not patterns:
            raise RegistryError("@on() needs at least one event type, e.g. @on('payment.succeeded')")
        for pattern in patterns:
            if not isinstance(pattern, str) or not _PATTERN.match(pattern):
                raise RegistryError(
                    f"@on({pattern!r}): use 'group.action', 'group.*' or '*' (lower case)"
                )

        def decorator(func: HandlerFunc) -> HandlerFunc:
            if known_type:
                for pattern in patterns:
                    _check_known(pattern, name or f"{func.__module__}.{func.__qualname__}")
            self.add(func, patterns, name=name, batched=batched, prepare=prepare)
            return func

        return decorator

    def add(self, func: HandlerFunc, patterns: Iterable[str], name: str | None = None, *,
            batched: bool = False, prepare: PrepareFunc | None = None) -> Handler:
        qualified = name or f"{func.__module__}.{func.__qualname__}"
        if not inspect.iscoroutinefunction(func):
            raise RegistryError(f"handler {qualified} must be 'async def', not a plain function")
        existing = self._handlers.get(qualified)
        if existing is not None:
            if existing.func is func or _same_source(existing.func, func):
                return existing  # the same function imported twice is not a conflict
            raise RegistryError(
                f"handler name {qualified!r} is registered twice; pass @on(..., name='unique')"
            )
        handler = Handler(name=qualified, func=func, patterns=tuple(patterns), batched=batched, prepare=prepare)
        self._handlers[qualified] = handler
        return handler

    def remove(self, name: str) -> None:
        self._handlers.pop(name, None)

    def handlers_for(self, event_type: str) -> list[Handler]:
        return [h for h in self._handlers.values() if h.matches(event_type)]

    def get(self, name: str) -> Handler | None:
        return self._handlers.get(name)

    def __iter__(self) -> Any:
        return iter(self._handlers.values())

    def __len__(self) -> int:
        return len(self._handlers)


@functools.cache
def known_event_types() -> frozenset[str]:
    """The event types the pinned `dodopayments` SDK defines: the bundled samples are one per
    type (tests/test_samples.py holds them to the SDK's list), and reading their names is much
    cheaper than importing the SDK at every start."""
    from worker.samples import sample_types

    return frozenset(sample_types())


def _check_known(pattern: str, handler: str) -> None:
    if pattern == "*":
        return
    known = known_event_types()
    candidates = sorted({t.split(".", 1)[0] + ".*" for t in known}) if pattern.endswith(".*") else sorted(known)
    if pattern in candidates:
        return
    nearest = difflib.get_close_matches(pattern, candidates, n=1, cutoff=0.0)
    hint = f"did you mean {nearest[0]!r}? " if nearest else ""
    raise RegistryError(
        f"@on({pattern!r}) on {handler}: Dodo sends no such event type; {hint}"
        "(pass known_type=False for a type the pinned SDK does not know yet)"
    )


def _same_source(a: HandlerFunc, b: HandlerFunc) -> bool:
    code_a, code_b = getattr(a, "__code__", None), getattr(b, "__code__", None)
    return bool(code_a and code_b and code_a.co_filename == code_b.co_filename
                and code_a.co_firstlineno == code_b.co_firstlineno)


def load_handler_modules(modules: Iterable[str]) -> None:
    """Import each module so its `@on` decorators run; a failing import names the module.

    Modules are found from the working directory too (as uvicorn, arq and celery find theirs),
    and a module of the merchant's that takes one of dodo-worker's own package names stops the
    process here, named, instead of silently replacing the built-in handlers."""
    _find_modules_in_working_directory()
    for module in modules:
        try:
            importlib.import_module(module)
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(
                f"cannot import handler module {module!r} (HANDLER_MODULES): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    _check_own_packages()


def _find_modules_in_working_directory() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)
    _check_own_packages()


def _check_own_packages() -> None:
    from dodo_worker import PackageClash, check_packages

    try:
        check_packages((Path(os.getcwd()),))
    except PackageClash as exc:
        raise RegistryError(str(exc)) from None


default_registry = Registry()
on = default_registry.on
