"""The wheel a merchant installs: typed (py.typed, so their mypy checks their handlers), with the
samples and migrations the CLI needs, and the entry point that checks for package clashes."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_is_typed_and_holds_what_the_cli_needs(tmp_path: Path) -> None:
    had_build_dir = (REPO / "build").exists()
    try:
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(tmp_path), str(REPO)], check=True, capture_output=True, timeout=300)
    finally:
        if not had_build_dir:  # setuptools builds in the source tree; leave it as it was
            shutil.rmtree(REPO / "build", ignore_errors=True)
    (wheel,) = tmp_path.glob("dodo_worker-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith("entry_points.txt"))
    for package in ("worker", "handlers", "integrations", "dodo_worker"):
        assert f"{package}/py.typed" in names, package
    assert "worker/samples/payment.succeeded.json" in names
    assert "worker/project_template/pyproject.toml.tmpl" in names, "what dodo-worker init writes"
    assert "worker/testing/plugin.py" in names and "worker/testing/fakedodo/server.py" in names
    assert "pytest11" in entry_points and "worker.testing.plugin" in entry_points
    assert any(n.startswith("worker/migrations/versions/0005") for n in names)
    assert "dodo-worker = dodo_worker:main" in entry_points
    assert not any(n.startswith("tests/") for n in names), "the suite is not shipped"
