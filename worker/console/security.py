"""Security headers of every console response (pages, redirects, errors and static files)."""

from __future__ import annotations

from litestar import Response

# No inline script or style anywhere (htmx is a file under /console/static and its indicator
# styles are turned off in base.html); no framing; forms may only post back to us.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

COMMON = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
PAGE = {**COMMON, "Cache-Control": "no-store", "Pragma": "no-cache"}
STATIC = {**COMMON, "Cache-Control": "public, max-age=3600"}


def secure(response: Response) -> Response:
    """`response` with the page headers (never cached: pages show customer data)."""
    response.headers.update(PAGE)
    return response


async def page_headers(response: Response) -> Response:
    """The console router's after_request hook."""
    return secure(response)


async def static_headers(response: Response) -> Response:
    """The static router's after_request hook: the same headers, but htmx and CSS may be cached."""
    response.headers.update(STATIC)
    return response
