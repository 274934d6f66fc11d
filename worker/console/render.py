"""Rendering console pages: the template, the base layout's context and the security headers."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Redirect, Template

from worker.console import csrf
from worker.console.auth import Operator
from worker.console.security import PAGE

# The nav of base.html: (path, label). A page marks itself current by its path prefix.
NAV = [
    ("/console", "Overview"),
    ("/console/events", "Events"),
    ("/console/grants", "Grants"),
    ("/console/hooks", "Hooks"),
    ("/console/reconciliation", "Reconciliation"),
]


def current_operator(request: Request) -> Operator | None:
    """The operator of this request, once the `operator` dependency has run."""
    return getattr(request.state, "console_operator", None)


def render(request: Request, template: str, status_code: int = 200, headers: dict[str, str] | None = None,
           **context: Any) -> Template:
    """`template` (under worker/console/templates) with `context` plus what base.html uses:
    `operator`, `csrf_token`, `csrf_field` (the hidden form field), `nav`, `path`, `htmx` (the
    request came from htmx: render a partial `_*.html` instead of a page if you like)."""
    operator = current_operator(request)
    token = operator.csrf_token if operator is not None else context.pop("csrf_token", "")
    path = request.url.path.rstrip("/") or "/"
    nav = [(href, label, path == href or (href != "/console" and path.startswith(href + "/")))
           for href, label in NAV]
    base = {"operator": operator, "csrf_token": token, "csrf_field": csrf.hidden_input(token) if token else "",
            "nav": nav, "path": path, "htmx": request.headers.get("hx-request") == "true"}
    return Template(template_name=template, context={**base, **context}, status_code=status_code,
                    headers={**PAGE, **(headers or {})})


def see_other(path: str, **options: Any) -> Redirect:
    """303 to `path` (after a form POST: the browser GETs the page, a reload never re-posts)."""
    return Redirect(path, status_code=303, headers=dict(PAGE), **options)
