"""The CLI at 80 columns: every command's help fits, flags read as flags, every option is
explained, and `--version` answers."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer

from worker.cli.main import app

BIN = Path(sys.executable).parent / "dodo-worker"


def commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command under `group` (typer ships its own click, so this walks by attribute)."""
    found = [(path, group)]
    for name, command in getattr(group, "commands", {}).items():
        found += commands(command, (*path, name))
    return found


ALL = commands(typer.main.get_command(app))


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "dodo-worker" for p, _ in ALL])
def test_every_option_has_help(path: tuple[str, ...], command: Any) -> None:
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"dodo-worker {' '.join(path)} {param.opts[0]} has no help text"


def test_help_fits_80_columns_with_flags_shown_as_flags() -> None:
    for path, _ in ALL:
        done = subprocess.run([str(BIN), *path, "--help"], env={"COLUMNS": "80", "PATH": "/usr/bin:/bin"},
                              capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        wide = [line for line in done.stdout.splitlines() if len(line) > 80]
        assert not wide, f"dodo-worker {' '.join(path)} --help: {wide}"
        assert "<bool>" not in done.stdout


def test_version() -> None:
    done = subprocess.run([str(BIN), "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, f"dodo-worker {version('dodo-worker')}")
