"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL: a
table, column or index added to a model without its migration fails here, not in production."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

import worker.entitlements.models  # registers the entitlement tables
import worker.reconcile.models  # noqa: F401  (registers the reconciliation tables)
from worker.store.database import create_engine
from worker.store.models import Base


def _differences(connection: Any) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return [diff for diff in compare_metadata(context, Base.metadata)
            if not (isinstance(diff, tuple) and diff[0] == "remove_table" and diff[1].name == "alembic_version")]


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            differences = await connection.run_sync(_differences)
    finally:
        await engine.dispose()
    assert differences == []
