"""Status writes of the operator: one writer per run, so concurrent handlers never lose each other's changes.

Why a module of its own: the Job, pod, timer and create handlers all change a run's status, from kopf's
thread pool and the event loop at once. ``write_status`` takes one lock per run, GETs the run fresh,
computes the change, merge-patches only the fields that changed, then posts the change's Events and counts
phase transitions. The trainer patches only ``status.progress``/``checkpoint``/``metrics``, which the
operator never writes. ``KUBE`` is the process's one API client, shared with the handlers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, cast

import kopf

from . import metrics
from .kube import Kube, run_path
from .status import StatusChange

KUBE = Kube()

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def forget_lock(namespace: str, name: str) -> None:
    """Drop the lock of a deleted run."""
    with _locks_guard:
        _locks.pop((namespace, name), None)


def as_body(obj: Mapping[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, dict(obj)))


def write_status(
    namespace: str, name: str, compute: Callable[[dict[str, Any]], StatusChange]
) -> StatusChange | None:
    """GET the run, compute its status change, merge-patch what changed, post Events; one writer per run."""
    with _lock(namespace, name):
        run = KUBE.get(run_path(namespace, name))
        if run is None:
            return None
        change = compute(run)
        if (
            change.status
            and KUBE.merge_patch(run_path(namespace, name, "status"), {"status": change.status}) is None
        ):
            return None  # deleted meanwhile
    for ev in change.events:
        kopf.event(as_body(run), type=ev.type, reason=ev.reason, message=ev.message)
    if "phase" in change.status:
        symbol = str((run.get("spec") or {}).get("symbol", ""))
        metrics.count_transition(namespace, symbol, change.old_phase, change.phase, change.reason)
    return change
