"""Status writes of the operator: one writer per run, so concurrent handlers never lose each other's changes.

Why a module of its own: the Job, pod, stall-sweep and create handlers all change a run's status from the
operator's thread pool at once. ``StatusWriter.write`` takes one lock per run, GETs the run fresh, computes the
change, merge-patches only the fields that changed, then posts the change's Events (from the
``trainingrun-operator`` component) and counts phase transitions. The trainer patches only
``status.progress``/``checkpoint``/``metrics``, which the operator never writes -- except a walk-forward run's
``metrics``, pooled from its folds (``trainop.folds``), whose pods write no status. One ``StatusWriter`` per
operator process, made at start-up with the process's ``Kube`` and kept in kopf's memo (``runtime``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from . import prometheus
from .kube import Kube
from .status import Event, StatusChange

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def run_fields(namespace: str, name: str) -> dict[str, Any]:
    """``extra=`` of a log line about a run (the JSON log's ``run`` field)."""
    return {"run": {"namespace": namespace, "name": name}}


class StatusWriter:
    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._guard = threading.Lock()

    def _lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def forget(self, namespace: str, name: str) -> None:
        """Drop the lock of a deleted run."""
        with self._guard:
            self._locks.pop((namespace, name), None)

    def write(
        self,
        namespace: str,
        name: str,
        compute: Callable[[dict[str, Any]], StatusChange],
        symbol: str = "",
    ) -> StatusChange | None:
        """GET the run, compute its status change, merge-patch what changed, post Events; one writer per
        run. None when the run is gone. ``symbol`` labels the transition counters."""
        with self._lock(namespace, name):
            run = self.kube.read_run(namespace, name)
            if run is None:
                return None
            change = compute(run)
            if change.status and self.kube.patch_run_status(namespace, name, change.status) is None:
                return None  # deleted meanwhile
        for ev in change.events:
            self.post(run, ev)
        if "phase" in change.status:
            prometheus.count_transition(namespace, symbol, change.old_phase, change.phase, change.reason)
        return change

    def post(self, run: Mapping[str, Any], event: Event) -> None:
        """Post one Event; a failure is logged, never raised (Events explain, they are not the state)."""
        try:
            self.kube.post_event(run, event.type, event.reason, event.message)
        except Exception as exc:
            meta = run.get("metadata") or {}
            log.warning(
                "could not post the %s Event: %s",
                event.reason,
                exc,
                extra=run_fields(str(meta.get("namespace")), str(meta.get("name"))),
            )
