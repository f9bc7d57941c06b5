"""Stopping the child processes the tests start (servers, the operator, trainers): SIGTERM, wait, then SIGKILL.

One copy, so every fixture gives its process the same chance to shut down cleanly before it is killed.
"""

from __future__ import annotations

import subprocess
from typing import Any


def stop_process(proc: subprocess.Popen[Any] | None, timeout: float = 15) -> None:
    """Terminate ``proc`` if it still runs; kill it if it has not exited after ``timeout`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
