"""Handlers imported at start (HANDLER_MODULES defaults to this package).

Add your own module here (or list it in HANDLER_MODULES) and decorate async functions
with `@on(...)`; see `handlers/example.py`.
"""

from handlers import example  # noqa: F401
