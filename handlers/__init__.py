"""dodo-worker's built-in handlers.

`handlers.entitlements` (licence keys, files, hooks, driven by ENTITLEMENTS_FILE) is imported by
every process whenever a catalog is loaded, whatever HANDLER_MODULES says. `handlers.example` is
a module to copy; it is only imported when HANDLER_MODULES names it. Your own handlers belong in
a package of your own (any name but `worker`, `handlers` or `integrations`), listed in
HANDLER_MODULES.
"""

# Checked at start: a different package called `handlers` (yours, or a distribution installed
# over this one) would otherwise replace the built-in grants without a word.
DODO_WORKER_PACKAGE = True
