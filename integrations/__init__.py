"""Adapters to the outside: Dodo's API, file storage, outbound hooks."""

DODO_WORKER_PACKAGE = True  # dodo_worker.check_packages tells our package from another of this name by it
