"""``wait_for``: the one polling helper of the tests (operator, emulator and Prometheus end-to-end tests)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tests.support.kubeemu.client import ApiResponseError

T = TypeVar("T")
# What a server that is not ready yet raises: the API (404 before a create lands), a socket, a half-written file.
NOT_YET: tuple[type[Exception], ...] = (
    ApiResponseError,
    OSError,
    ValueError,
    KeyError,
    subprocess.SubprocessError,
)


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    timeout: float = 20.0,
    log: Path | None = None,
    *,
    interval: float = 0.1,
    retry_on: tuple[type[Exception], ...] = NOT_YET,
) -> T:
    """Poll ``probe`` until it returns something truthy and return that. An exception in ``retry_on`` counts as
    "not yet" (it is shown as the last result). On timeout: AssertionError naming ``what``, the last result and
    the tail of ``log``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except retry_on as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[no-any-return]
        time.sleep(interval)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}\n{tail}".rstrip())
