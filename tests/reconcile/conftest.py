"""Fixtures for reconciliation tests: the fake Dodo API over real HTTP (`fake_dodo`: `dodo` is
the test kit's fixture), running the CLI, and the built-in entitlement handlers with a catalog
(`registry`, `catalog_path` from tests/entitlements) so that tests check grants, what a
merchant's customers actually get."""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from tests.entitlements.conftest import catalog_path, registry  # noqa: F401 - fixtures used here
from tests.support import Stack
from worker.entitlements.models import GrantRow
from worker.store import EventRow, EventSource
from worker.testing.fakedodo import FakeDodo, serve


@dataclass
class FakeApi:
    fake: FakeDodo
    url: str

    @property
    def env(self) -> dict[str, str]:
        """What the CLI (or a worker) needs to reach this fake."""
        return {"DODO_PAYMENTS_API_KEY": self.fake.api_key, "DODO_PAYMENTS_BASE_URL": self.url}

    async def reconcile(self, stack: Stack, *args: str, expect: int = 0) -> dict[str, Any]:
        """`dodo-worker reconcile --json ARGS` against this fake; its JSON output."""
        code, out, err = await stack.cli("reconcile", "--json", *args, env=self.env)
        assert code == expect, err
        assert self.fake.api_key not in out + err
        return json.loads(out) if code == 0 else {"error": err}

    def fetches(self, collection: str = "payments") -> int:
        """Full-object reads (`GET /payments/{id}`) answered so far."""
        return sum(1 for c in self.fake.calls if c.path.startswith(f"/{collection}/") and c.status == 200)


@pytest.fixture
async def stack_factory(stack_factory: Any, redis_url: str) -> AsyncIterator[Any]:
    """The root stack_factory, plus clean-up of the arq job keys of synthetic events: arq names
    them by job id (the event id) alone, and reconciliation's ids are deterministic, so a job
    left queued by one test would make another test's identical id look queued already."""
    stacks: list[Stack] = []

    async def make(*args: Any, **kwargs: Any) -> Stack:
        stack: Stack = await stack_factory(*args, **kwargs)
        stacks.append(stack)
        return stack

    yield make
    client = Redis.from_url(redis_url)
    try:
        for stack in stacks:
            async with stack.db.sessions() as session:
                ids = list(await session.scalars(select(EventRow.id).where(EventRow.source == EventSource.RECONCILE)))
            prefixes = ("arq:job:", "arq:in-progress:", "arq:retry:")
            keys = [f"{p}{stack.settings.QUEUE_NAME}:{i}" for i in ids for p in prefixes]
            for start in range(0, len(keys), 1000):
                await client.delete(*keys[start:start + 1000])
    finally:
        await client.aclose()


@pytest.fixture
async def fake_dodo() -> AsyncIterator[FakeApi]:
    fake = FakeDodo()
    async with serve(fake) as url:
        yield FakeApi(fake, url)
        if fake.gate is not None:
            fake.gate.set()  # let held requests end so the server can stop


def as_delivered(payment: dict[str, Any]) -> dict[str, Any]:
    """A payment as its payment.succeeded webhook carried it: before any refund or dispute."""
    data = copy.deepcopy(payment)
    data.update(refunds=[], disputes=[])
    return data


async def grants_by_payment(stack: Stack) -> dict[str, list[str]]:
    """payment_id -> the statuses of its grants (one per catalog item)."""
    found: dict[str, list[str]] = {}
    async with stack.db.sessions() as session:
        for row in await session.scalars(select(GrantRow).order_by(GrantRow.id)):
            found.setdefault(row.payment_id or row.subscription_id or "", []).append(row.status)
    return found
