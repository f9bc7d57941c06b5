"""The operator's log lines: one JSON object per line in a pod, readable text in a terminal, and the run's
namespace/name on every line about a run.

Why kopf's JSON format: log collectors parse it as is (``message``, ``severity``, ``timestamp``, and
``object`` for the Kubernetes object a line is about). ``RunFields`` adds ``run: {namespace, name}`` to
every line about a TrainingRun -- kopf's own lines about it and the operator's lines (``extra=run_fields(...)``)
alike -- so ``jq 'select(.run.name == "sol-tft")'`` finds all of a run's history. ``TRAINOP_LOG_FORMAT``
chooses: ``auto`` (JSON unless stderr is a terminal), ``json`` or ``text``."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TextIO

import kopf

from trainer.api.spec import KIND

REF_KEY = "object"


class RunFields(logging.Filter):
    """``record.run`` from the record's TrainingRun reference, unless the line set its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "run"):
            ref = getattr(record, "k8s_ref", None)
            if isinstance(ref, Mapping) and ref.get("kind") == KIND:
                record.run = {"namespace": ref.get("namespace"), "name": ref.get("name")}
        return True


class QuietRoutine(logging.Filter):
    """Drop kopf's per-event "succeeded" lines of the watch handlers (thousands per minute at 1,000 runs);
    failures and the create/delete handlers still log."""

    NOISY = (
        "Handler 'run_event' succeeded",
        "Handler 'job_event' succeeded",
        "Handler 'pod_event' succeeded",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISY)


def wants_json(log_format: str, stream: TextIO | None = None) -> bool:
    if log_format == "json":
        return True
    if log_format == "text":
        return False
    stream = stream or sys.stderr
    return not (hasattr(stream, "isatty") and stream.isatty())


def configure(log_format: str) -> None:
    """kopf's logging in the chosen format (``python -m trainop``; ``kopf run`` has ``--log-format``)."""
    if wants_json(log_format):
        kopf.configure(verbose=False, log_format=kopf.LogFormat.JSON, log_refkey=REF_KEY)
    else:
        kopf.configure(verbose=False)
    install_filters()


def install_filters() -> None:
    """The filters on whatever handlers are there (also after ``kopf run --log-format=json``); idempotent."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RunFields) for f in handler.filters):
            handler.addFilter(RunFields())
    objects_log = logging.getLogger("kopf.objects")
    if not any(isinstance(f, QuietRoutine) for f in objects_log.filters):
        objects_log.addFilter(QuietRoutine())
