"""Handlers imported at start (HANDLER_MODULES defaults to this package).

Add your own module here (or list it in HANDLER_MODULES) and decorate async functions
with `@on(...)`; see `handlers/example.py`. `handlers/entitlements.py` holds the built-in
entitlement handlers (license keys, files, hooks), driven by ENTITLEMENTS_FILE.
"""

from handlers import entitlements, example  # noqa: F401
