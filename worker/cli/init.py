"""`dodo-worker init PATH`: a merchant's project, ready to test and deploy.

The files come from `worker/project_template/` (package data). Every template ends in `.tmpl`
so that ruff, mypy and pytest never take them for dodo-worker's own code; dotfiles are stored
without their dot (`env.example`), which package-data globs would skip.
"""

from __future__ import annotations

import importlib.util
import json
import keyword
import re
import shlex
import sys
from importlib.metadata import PackageNotFoundError, distribution
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import typer

from dodo_worker import OWN_PACKAGES as RUNTIME_PACKAGES
from worker.cli.common import fail

TEMPLATE = "project_template"
SUFFIX = ".tmpl"
DOTFILES = {"env.example": ".env.example", "gitignore": ".gitignore", "dockerignore": ".dockerignore"}
# dodo-worker's own top-level packages: a merchant's package of the same name would replace them.
OWN_PACKAGES = (*RUNTIME_PACKAGES, "dodo_worker")


def init_command(
    path: Path = typer.Argument(..., metavar="PATH", help="Folder to create (it may exist if it is empty)."),
    name: str | None = typer.Option(None, "--name", help="Your handler package's name (default: "
                                    "the folder's name, e.g. acme-shop gives acme_shop)."),
    force: bool = typer.Option(False, "--force", help="Write into a folder that is not empty, "
                               "replacing files of the same names."),
) -> None:
    """Start a project of your own in PATH.

    It holds your handler package (named after the folder), entitlements.toml, .env.example,
    a Procfile, a Dockerfile, pyproject.toml, and tests on the test kit that pass at once."""
    package = name if name is not None else package_name(path.resolve().name)
    problem = name_problem(package, path)
    if problem is not None:
        fail(problem)
    if path.exists() and not path.is_dir():
        fail(f"{path} exists and is not a folder")
    if path.is_dir() and any(path.iterdir()) and not force:
        fail(f"{path} is not empty: choose a new folder, or pass --force")
    try:
        written = write_project(path, package)
    except OSError as exc:
        fail(f"cannot write the project in {path}: {exc.strerror or exc}")
    _report(path, package, written)


def package_name(folder: str) -> str:
    """A folder's name as a Python package name: `Acme-Shop 2` gives `acme_shop_2`."""
    return re.sub(r"[^a-z0-9_]+", "_", folder.lower()).strip("_")


def name_problem(package: str, target: Path) -> str | None:
    """Why `package` cannot name the merchant's package, or None. A module of that name
    installed from elsewhere would be imported instead of it (or it instead of that one)."""
    if not package.isidentifier() or keyword.iskeyword(package):
        return f"{package!r} is not a Python package name: pass --name, e.g. acme_shop"
    if package in OWN_PACKAGES:
        return f"{package!r} is a package of dodo-worker's own: pass another --name"
    if package in sys.stdlib_module_names:
        return f"{package!r} is in Python's standard library: pass another --name"
    spec = importlib.util.find_spec(package)
    where = (spec.origin or next(iter(spec.submodule_search_locations or []), "")) if spec else ""
    if spec is not None and not Path(where).resolve().is_relative_to(target.resolve()):
        return f"a module {package!r} is installed already ({where}): pass another --name"
    return None


def write_project(target: Path, package: str) -> list[Path]:
    """Write every template under `target` with its placeholders filled; the paths written."""
    values = {"{{package}}": package, "{{project}}": package.lower().replace("_", "-")}
    written = []
    for relative, template in _templates(files("worker") / TEMPLATE, ()):
        destination = target.joinpath(*_target_parts(relative, package))
        text = template.read_text(encoding="utf-8")
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(text, encoding="utf-8")
        written.append(destination.relative_to(target))
    return sorted(written)


def _templates(folder: Traversable, prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Traversable]]:
    found = []
    for entry in folder.iterdir():
        if entry.is_dir():
            found += _templates(entry, (*prefix, entry.name))
        elif entry.name.endswith(SUFFIX):
            found.append(((*prefix, entry.name), entry))
    return found


def _target_parts(relative: tuple[str, ...], package: str) -> list[str]:
    """`package/__init__.py.tmpl` -> `acme_shop/__init__.py`; `env.example.tmpl` -> `.env.example`."""
    parts = []
    for part in relative:
        part = part.removesuffix(SUFFIX)
        part = DOTFILES.get(part, part)
        part = package if part == "package" else part.replace("_package.", f"_{package}.")
        parts.append(part)
    return parts


def dodo_worker_source() -> str | None:
    """Where this dodo-worker was installed from, as a pip argument; None from an index.

    Until dodo-worker is published, `pip install -e .` in the new project could not find it:
    installing the same one first makes the next steps work as printed."""
    try:
        raw = distribution("dodo-worker").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    return pip_argument(json.loads(raw)) if raw else None


def pip_argument(direct_url: dict[str, Any]) -> str | None:
    """A PEP 610 `direct_url.json` as what to give `pip install`: a folder or file path, or
    `dodo-worker @ git+URL@COMMIT`."""
    url = str(direct_url.get("url", ""))
    vcs = direct_url.get("vcs_info")
    if vcs:
        revision = vcs.get("commit_id") or vcs.get("requested_revision")
        return f"dodo-worker @ {vcs.get('vcs', 'git')}+{url}" + (f"@{revision}" if revision else "")
    if url.startswith("file://"):
        return unquote(urlparse(url).path)
    return f"dodo-worker @ {url}" if url else None


def _report(path: Path, package: str, written: list[Path]) -> None:
    shown = str(path)
    typer.echo(f"wrote {len(written)} files in {shown}:")
    for relative in written:
        typer.echo(f"  {relative.as_posix()}")
    typer.echo("")
    typer.echo("next steps:")
    here = path.resolve() == Path.cwd().resolve()
    steps = ([] if here else [f"cd {shlex.quote(shown)}"]) + ["python3 -m venv .venv"]
    source = dodo_worker_source()
    if source is not None:
        steps.append(f".venv/bin/pip install {shlex.quote(source)}")
    steps += [".venv/bin/pip install -e '.[dev]'", "cp .env.example .env", ".venv/bin/pytest",
              ".venv/bin/dodo-worker dev"]
    for step in steps:
        typer.echo(f"  {step}")
    typer.echo("")
    typer.echo(f"Your handlers are in {package}/__init__.py; what each product grants, in")
    typer.echo("entitlements.toml (put your own product ids there, and in tests/).")
