"""The console's router (mounted at /console by worker/web/app.py), its dependencies and its
sign-in / sign-out pages. See the package docstring for how a page plugs in."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote

from litestar import Request, Response, Router, get, post
from litestar.datastructures import Cookie, State
from litestar.di import Provide
from litestar.exceptions import HTTPException
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig
from litestar.types import ControllerRouterHandler
from sqlalchemy.exc import SQLAlchemyError

from worker.console import audit, auth, csrf
from worker.console.params import Form, SignedIn, Store
from worker.console.render import render, see_other
from worker.console.security import page_headers, secure, static_headers
from worker.runtime import Runtime
from worker.settings import Settings

HERE = Path(__file__).parent
LIMITER_KEY = "console_signin_limiter"
log = logging.getLogger("dodo_worker.console")


class ConsoleDisabled(Exception):
    """CONSOLE_PASSWORD is not set."""


class SignInRequired(Exception):
    """No live session: every console page answers with a redirect to the sign-in page."""


class CSRFRefused(Exception):
    """A POST without the form's CSRF token."""


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=HERE / "templates", engine=JinjaTemplateEngine)


# --- dependencies -----------------------------------------------------------------------------

async def provide_operator(request: Request, state: State) -> auth.Operator:
    settings: Settings = state.settings
    if settings.CONSOLE_PASSWORD is None:
        raise ConsoleDisabled
    runtime: Runtime = state.runtime
    operator = await auth.find_operator(request, settings, runtime.db)
    if operator is None:
        raise SignInRequired
    request.state.console_operator = operator
    return operator


async def provide_form(request: Request, operator: SignedIn) -> dict[str, str]:
    """The POSTed form's text fields, once its CSRF token is checked (CSRFRefused otherwise)."""
    form = await request.form()
    if not csrf.matches(operator.csrf_token, form.get(csrf.FIELD)):
        raise CSRFRefused
    return {key: value for key, value in form.items() if isinstance(value, str) and key != csrf.FIELD}


async def provide_db(state: State) -> Any:
    runtime: Runtime = state.runtime
    return runtime.db


# --- exception handlers -------------------------------------------------------------------------

def _disabled(request: Request, _exc: Exception) -> Response:
    return render(request, "disabled.html", status_code=404)


def _sign_in_first(request: Request, _exc: Exception) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return see_other(f"/console/signin?next={quote(target, safe='')}")


def _csrf_refused(request: Request, _exc: Exception) -> Response:
    return render(request, "error.html", status_code=403, title="Refused",
                  message="This form is out of date or did not come from the console (no valid CSRF token). "
                          "Nothing was changed: reload the page and try again.")


def _http_error(request: Request, exc: HTTPException) -> Response:
    return render(request, "error.html", status_code=exc.status_code, title=str(exc.status_code),
                  message=str(exc.detail))


def _store_down(request: Request, exc: Exception) -> Response:
    log.warning("console: store unavailable: %s", type(exc).__name__)
    return render(request, "error.html", status_code=503, title="Store unavailable",
                  message="The database cannot be reached right now; try again in a moment.")


EXCEPTION_HANDLERS: Any = {
    ConsoleDisabled: _disabled, SignInRequired: _sign_in_first, CSRFRefused: _csrf_refused,
    HTTPException: _http_error, SQLAlchemyError: _store_down, OSError: _store_down,
}


# --- sign-in and sign-out ---------------------------------------------------------------------------

MAX_NEXT = 2000


def _safe_next(raw: object) -> str:
    """Where to go after signing in: a console path of this site only (never another site such as
    `//evil`, `https://...` or `/console\\..`, nor a control character), else /console."""
    if not isinstance(raw, str) or len(raw) > MAX_NEXT or "\\" in raw:
        return "/console"
    console_path = raw == "/console" or raw.startswith(("/console/", "/console?"))
    return raw if console_path and raw.isprintable() else "/console"


def _limiter(request: Request, settings: Settings) -> auth.SignInLimiter:
    limiter = getattr(request.app.state, LIMITER_KEY, None)
    if limiter is None:
        limiter = auth.SignInLimiter(settings.CONSOLE_SIGNIN_MAX_FAILURES, settings.CONSOLE_SIGNIN_WINDOW_SECONDS)
        setattr(request.app.state, LIMITER_KEY, limiter)
    return limiter


def _signin_page(request: Request, status_code: int = 200, error: str | None = None, name: str = "",
                 headers: dict[str, str] | None = None, next_path: object = None) -> Response:
    """The sign-in form; `next_path` (the POSTed form's `next`, else the query's) is kept in it, so
    a wrong password does not lose where the operator was going."""
    token = request.cookies.get(csrf.SIGNIN_COOKIE) or csrf.new_signin_token()
    target = _safe_next(next_path if next_path is not None else request.query_params.get("next"))
    response = render(request, "signin.html", status_code=status_code, headers=headers, csrf_token=token,
                      error=error, name=name, next=target)
    response.cookies.append(Cookie(key=csrf.SIGNIN_COOKIE, value=token, path="/console/signin", httponly=True,
                                   samesite="strict", secure=auth.is_https(request, request.app.state.settings)))
    return response


@get("/signin")
async def signin_form(request: Request, state: State) -> Response:
    if state.settings.CONSOLE_PASSWORD is None:
        raise ConsoleDisabled
    return _signin_page(request)


@post("/signin", status_code=303)
async def signin(request: Request, state: State) -> Response:
    settings: Settings = state.settings
    if settings.CONSOLE_PASSWORD is None:
        raise ConsoleDisabled
    client = auth.client_address(request, settings)
    limiter = _limiter(request, settings)
    form = await request.form()
    next_path = form.get("next")
    wait = limiter.retry_after(client)
    if wait is not None:
        return _signin_page(request, 429, f"Too many failed sign-ins from {client}: try again in {wait} s.",
                            headers={"Retry-After": str(wait)}, next_path=next_path)
    expected = request.cookies.get(csrf.SIGNIN_COOKIE)
    if expected is None or not csrf.matches(expected, form.get(csrf.FIELD)):
        raise CSRFRefused
    name = auth.clean_name(form.get("operator"))
    password = form.get("password")
    if name is None:
        return _signin_page(request, 400, "Give your name (up to 64 characters): it goes in the audit trail.",
                            next_path=next_path)
    runtime: Runtime = state.runtime
    if not isinstance(password, str) or not auth.password_matches(settings, password):
        limiter.failed(client)
        await asyncio.sleep(settings.CONSOLE_SIGNIN_FAIL_DELAY_SECONDS)
        await audit.record(runtime.db, auth.Operator(name, client, "", ""), "signin.failed")
        return _signin_page(request, 401, "Wrong password.", name=name, next_path=next_path)
    limiter.succeeded(client)
    token, operator = await auth.start_session(runtime.db, settings, name, client)
    await audit.record(runtime.db, operator, "signin")
    response = see_other(_safe_next(next_path))
    response.cookies.append(Cookie(key=auth.COOKIE, value=token, path="/console", httponly=True, samesite="lax",
                                   secure=auth.is_https(request, settings),
                                   max_age=int(settings.CONSOLE_SESSION_SECONDS)))
    return response


@post("/signout", status_code=303)
async def signout(operator: SignedIn, form: Form, db: Store) -> Response:
    await auth.end_session(db, operator)
    await audit.record(db, operator, "signout")
    response = see_other("/console/signin")
    response.delete_cookie(auth.COOKIE, path="/console")
    return response


@get("/{rest:path}")
async def not_found(request: Request, operator: SignedIn, rest: FromPath[str]) -> Response:
    """Any other console URL: the sign-in redirect without a session, a 404 page with one."""
    return render(request, "error.html", status_code=404, title="Not found", message=f"No console page {rest!r}.")


def console_router() -> Router:
    from worker.console import events, grants, hooks, overview, reconcile

    handlers: list[ControllerRouterHandler] = [
        signin_form, signin, signout, not_found,
        *overview.ROUTES, *events.ROUTES, *grants.ROUTES, *hooks.ROUTES, *reconcile.ROUTES,
        create_static_files_router(path="/static", directories=[HERE / "static"], name="console-static",
                                   after_request=static_headers),
    ]
    return Router(
        path="/console",
        route_handlers=handlers,
        dependencies={"operator": Provide(provide_operator), "form": Provide(provide_form),
                      "db": Provide(provide_db)},
        exception_handlers=EXCEPTION_HANDLERS,
        after_request=page_headers,
        include_in_schema=False,
    )


__all__ = ["console_router", "secure", "template_config"]
