"""What a console handler asks the router for, by parameter name, marked as Litestar wants it
(inferred dependencies are deprecated since Litestar 2.23 and stop working in 3.0).

    async def page(request: Request, operator: SignedIn, db: Store, grant_id: FromPath[str]) -> ...
    async def change(operator: SignedIn, form: Form, ...) -> ...

`operator` needs a session, `form` checks the CSRF token, `db` is the store (worker/console/app.py
provides them); path and query parameters are marked with litestar.params.FromPath / FromQuery."""

from __future__ import annotations

from typing import TypeAlias

from litestar.di import NamedDependency

from worker.console.auth import Operator
from worker.store import Database

SignedIn: TypeAlias = NamedDependency[Operator]
Form: TypeAlias = NamedDependency[dict[str, str]]
Store: TypeAlias = NamedDependency[Database]

__all__ = ["Form", "SignedIn", "Store"]
