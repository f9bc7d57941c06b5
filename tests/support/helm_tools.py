"""The chart tests' access to scripts/sync_manifests.py (helm rendering, finding the real tools).

Loaded by path because scripts/ is not a package; shared so the chart, alert and Prometheus tests use one copy.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def _load_sync() -> Any:
    spec = importlib.util.spec_from_file_location("sync_manifests", REPO / "scripts" / "sync_manifests.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("sync_manifests", module)
    spec.loader.exec_module(module)
    return module


sync = _load_sync()


def tool(name: str) -> str:
    """Path of a real tool (helm, promtool, prometheus); a clear failure naming .ci/install-tools.sh if missing."""
    try:
        return str(sync.find_tool(name))
    except sync.ToolMissing as exc:
        pytest.fail(str(exc), pytrace=False)
