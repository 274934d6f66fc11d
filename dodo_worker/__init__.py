"""The `dodo-worker` command's entry point, and the check that dodo-worker's own top-level
packages (`worker`, `handlers`, `integrations`) are the ones Python imports.

Those names are short and common: a merchant's package called `handlers` next to their code, on
PYTHONPATH, or installed over ours by another distribution would otherwise replace the built-in
grants without a word, or break the CLI with `No module named 'worker.cli'`. This module imports
nothing of dodo-worker's before it has looked, so the clash is named in one line instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

OWN_PACKAGES = ("worker", "handlers", "integrations")
ROOT = Path(__file__).resolve().parent.parent  # where dodo-worker's packages were installed
MARKER = "DODO_WORKER_PACKAGE"


class PackageClash(Exception):
    """A top-level package of dodo-worker's is shadowed or overwritten by someone else's."""


def _where(name: str) -> Path | None:
    module = sys.modules.get(name)
    if module is not None:
        file = getattr(module, "__file__", None)
        return Path(file).resolve().parent if file else None
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    if spec.origin and spec.origin not in ("namespace", "built-in", "frozen"):
        return Path(spec.origin).resolve().parent
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]).resolve() if locations else None


def _in_directory(directory: Path, name: str) -> Path | None:
    """`directory/name` when it holds a module or package of that name that is not ours."""
    for candidate in (directory / name, directory / f"{name}.py"):
        if candidate.exists() and candidate.resolve() != ROOT / name:
            return candidate
    return None


def check_packages(directories: tuple[Path, ...] = ()) -> None:
    """Raise PackageClash naming the first of our package names that resolves elsewhere, or that
    a module in one of `directories` (the working directory, once it is on sys.path) also uses."""
    for name in OWN_PACKAGES:
        for directory in directories:
            other = _in_directory(directory, name)
            if other is not None:
                raise PackageClash(_message(name, other))
        where = _where(name)
        if where != ROOT / name:
            raise PackageClash(_message(name, where))
        module = sys.modules.get(name)
        if module is not None and not getattr(module, MARKER, False):
            raise PackageClash(
                f"the package {name!r} at {where} is not dodo-worker's own: another distribution "
                f"installed files over it; rename that package and run "
                f"`pip install --force-reinstall dodo-worker`"
            )


def _message(name: str, other: Path | None) -> str:
    return (
        f"a module named {name!r} ({other or 'not found'}) clashes with dodo-worker's own {name!r} "
        f"package; rename yours (dodo-worker uses the top-level names {', '.join(OWN_PACKAGES)})"
    )


def main() -> None:
    """`dodo-worker`: look for clashes first, then run the CLI."""
    try:
        check_packages()
    except PackageClash as exc:
        sys.stderr.write(f"dodo-worker: {exc}\n")
        raise SystemExit(2) from None
    from worker.cli.main import main as cli_main

    cli_main()
