"""Values made to fit their column: a correctly signed event must be stored and granted whatever
its shape, so text loses NUL (PostgreSQL text cannot hold it; SQLite can, so only PostgreSQL
failed) and is cut to its column's length (PostgreSQL refuses longer values, SQLite keeps them).
One function for the inbox and for every row the entitlements write (`worker/entitlements/sql.py`)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import String, Table


def fit_text(value: str, length: int | None) -> str:
    """`value` without NUL, cut to `length` characters (None: any length)."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    return value if length is None or len(value) <= length else value[:length]


@cache
def _text_columns(table: Table) -> tuple[tuple[str, int | None], ...]:
    return tuple((column.name, column.type.length) for column in table.columns
                 if isinstance(column.type, String))


def fit_row(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Fit the row's text values to `table`'s columns, in place (the caller's dict may also build
    an ORM object afterwards, which must hold what was stored); returns `values`."""
    for name, length in _text_columns(table):
        value = values.get(name)
        if isinstance(value, str):
            values[name] = fit_text(value, length)
    return values
