"""The vendored spec is the one in shared/dodo/ (when that folder sits beside the checkout)."""

from __future__ import annotations

import pytest

from tests.dodo_spec import SHARED_SPEC, SPEC


def test_vendored_spec_matches_shared() -> None:
    if not SHARED_SPEC.exists():
        pytest.skip("shared/dodo/ is not beside this checkout; nothing to compare with")
    assert SPEC.read_bytes() == SHARED_SPEC.read_bytes(), "copy shared/dodo/openapi.documented.yml again"
