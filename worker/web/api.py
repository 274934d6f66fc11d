"""The /v1 API (entitlements, licences, downloads) plugs in here."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler


def api_routes() -> list[ControllerRouterHandler]:
    from worker.web.downloads import download
    from worker.web.entitlements import list_entitlements
    from worker.web.licenses import ROUTES as LICENSE_ROUTES

    return [list_entitlements, *LICENSE_ROUTES, download]
