"""The fake Dodo API now ships in the package (worker/testing/fakedodo/); these names stay for
the project's tests and `python -m tests.fakedodo` (the benchmark)."""

from worker.testing.fakedodo import FakeDodo, serve

__all__ = ["FakeDodo", "serve"]
