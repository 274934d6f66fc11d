"""Fixtures for reconciliation tests: the fake Dodo API over real HTTP, and running the CLI."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.fakedodo import FakeDodo, serve
from tests.support import Stack


@dataclass
class Dodo:
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


@pytest.fixture
async def dodo() -> AsyncIterator[Dodo]:
    fake = FakeDodo()
    async with serve(fake) as url:
        yield Dodo(fake, url)
        if fake.gate is not None:
            fake.gate.set()  # let held requests end so the server can stop
