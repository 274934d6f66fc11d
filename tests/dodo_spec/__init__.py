"""Dodo's published OpenAPI spec (2025-09), vendored from `shared/dodo/` so that a clone anywhere
runs the tests that check our receiver and the fake Dodo API against it (they used to skip when
`shared/` was not beside the checkout). `test_vendored_spec.py` fails if the copy drifts."""

from __future__ import annotations

from pathlib import Path

SPEC = Path(__file__).resolve().parent / "openapi.documented.yml"
SHARED_SPEC = Path(__file__).resolve().parents[3] / "shared" / "dodo" / "openapi.documented.yml"
