"""The hooks pages of the console (see the package docstring for how to add a page)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

ROUTES: list[ControllerRouterHandler] = []
