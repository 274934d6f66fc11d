"""Helpers the benchmarks share for the processes they start."""

from __future__ import annotations

import subprocess


def stop_process(process: subprocess.Popen[bytes], wait_seconds: float = 10) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within `wait_seconds`."""
    process.terminate()
    try:
        process.wait(wait_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
