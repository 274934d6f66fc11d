"""The events pages (/console/events, /console/events/{id}) and their replay actions."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

ROUTES: list[ControllerRouterHandler] = []
