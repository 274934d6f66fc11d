"""The operator console: HTML pages under /console, served by `web` (docs/console.md).

Off until CONSOLE_PASSWORD is set (every console URL then shows how to turn it on, no data).
worker/console/app.py builds the router; worker/web/app.py mounts it and the Jinja templates.

How to add a page (grants.py, hooks.py, reconcile.py each export `ROUTES`, which the router
includes; paths in them are relative to /console)::

    from litestar import Request, Response, get, post
    from litestar.exceptions import NotFoundException
    from litestar.params import FromPath
    from litestar.types import ControllerRouterHandler

    from worker.console import audit
    from worker.console.params import Form, SignedIn, Store
    from worker.console.render import render, see_other

    @get("/grants")
    async def grants_page(request: Request, operator: SignedIn, db: Store) -> Response:
        # Dependencies are asked for by name and marked so (worker/console/params.py; unmarked
        # ones are deprecated since Litestar 2.23), path and query parameters with FromPath /
        # FromQuery. Asking for `operator` requires a session: without one the router answers
        # 303 to /console/signin?next=<this URL> (and the "how to enable" page when the console
        # is off), before your code runs. `operator.name` / `operator.client` are who and from where.
        async with db.sessions() as session:
            rows = ...
        # render() fills in what base.html needs (nav, operator, `csrf_token`, `csrf_field`) and
        # the security headers. Templates extend base.html: {% extends "base.html" %}
        # {% block content %}...{% endblock %}. For an htmx request (`htmx` is true in the
        # context, or request.headers["hx-request"]) render a partial `_grants_table.html` instead.
        return render(request, "grants.html", title="Grants", rows=rows)

    @post("/grants/{grant_id:int}/revoke")
    async def revoke(request: Request, operator: SignedIn, form: Form, db: Store,
                     grant_id: FromPath[int]) -> Response:
        # Asking for `form` checks the CSRF token first: a POST without the right `csrf_token`
        # field is answered 403 (error page) and your code never runs. `form` holds the other
        # text fields. Every form in a template carries the token with {{ csrf_field }}:
        #   <form method="post" action="/console/grants/7/revoke">{{ csrf_field }}
        #     <input name="reason" required><button>Revoke</button></form>
        # (htmx: put hx-post on that same form, so it works with and without JavaScript.)
        async with db.sessions() as session, session.begin():
            ...  # the change, through the same code the CLI / the API use
            audit.add(session, operator, "grant.revoke", str(grant_id), form.get("reason"))
        # Record every action (audit.add in the change's transaction; audit.record(db, ...) when
        # nothing in SQL changes), then redirect (303) so a reload never re-posts.
        return see_other(f"/console/grants/{grant_id}")

    ROUTES: list[ControllerRouterHandler] = [grants_page, revoke]

Raise `NotFoundException("no grant 7")` for a missing object (a 404 page), return
`render(..., status_code=400, ...)` for bad input. Never put a secret, a signature header or
anything from settings' SecretStr fields in a context. Tests: tests/console/ (`console_stack`
and `signed_in` in tests/console/conftest.py).
"""
