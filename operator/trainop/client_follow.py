"""What ``python -m trainop submit --follow`` shows while a run trains, and what its exit code says (pure).

Why pure and apart from the API calls (``client_kube``): everything a person reads -- the epoch lines, the
status transitions, the final line, the exit code -- is decided here from plain dicts and strings, so it is
unit-tested without a cluster. Two streams come in: the TrainingRun as the API returns it (phase, reason,
``status.progress``, ``foldsDisplay``) and the trainer pod's log, whose JSON lines (``trainer.console``'s
non-terminal output) are parsed back into epochs, the summary and messages. Epochs come from the log while it
can be read (it has every epoch; the status is throttled), else from ``status.progress`` (a cluster that does
not let this user read pod logs). In a terminal the display (``client_display``) draws the same tqdm bar as
``python -m trainer run``; elsewhere it prints one plain line per event.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum, unique
from typing import Any, Literal, Protocol

from trainer.api.status import EpochStats


@unique
class Exit(IntEnum):
    """The documented exit codes of ``python -m trainop submit | wait | logs | list`` (README table)."""

    #: The run Succeeded (``--follow``, ``wait``); without ``--follow``: created, or already there as submitted.
    OK = 0
    #: The run Failed for any reason not listed under BAD_INPUT (OOMKilled, NaNLoss, BackoffLimitExceeded, ...).
    FAILED = 1
    #: The input is wrong and retrying it as it is cannot help: refused here before any API call (the manifest,
    #: a flag), or the run Failed as InvalidSpec (the operator refused it) or InvalidConfig (the trainer did).
    BAD_INPUT = 2
    #: ``--timeout`` passed before the run finished; the run goes on.
    TIMEOUT = 3
    #: The cluster: no kubeconfig, the API unreachable or refusing, the CRD not installed, no such run (or it
    #: was deleted while followed).
    API_ERROR = 4
    #: A run of that name exists with a different spec; nothing was changed.
    CONFLICT = 5
    #: Ctrl-C while following; the run goes on.
    INTERRUPTED = 130


#: One line per exit code, for ``--help`` (the comments above say more; so does the README's table).
EXIT_MEANINGS = {
    Exit.OK: "the run Succeeded (without --follow: created, or already there as submitted)",
    Exit.FAILED: "the run Failed (the reason is on the last line)",
    Exit.BAD_INPUT: "bad input: refused here (nothing sent), or the run Failed as InvalidSpec/InvalidConfig",
    Exit.TIMEOUT: "--timeout passed; the run goes on",
    Exit.API_ERROR: "the cluster: no kubeconfig, API unreachable or refusing, no CRD, no such run or pod",
    Exit.CONFLICT: "a run of that name exists with a different spec; nothing changed",
    Exit.INTERRUPTED: "Ctrl-C while following; the run goes on",
}

#: Failed reasons that mean "the input is wrong" (exit 2) rather than "the run failed" (exit 1).
BAD_INPUT_REASONS = frozenset({"InvalidSpec", "InvalidConfig"})
FINISHED_PHASES = ("Succeeded", "Failed")


def exit_code(phase: str | None, reason: str | None) -> Exit | None:
    """The exit code of a finished run; None while it is not finished."""
    if phase == "Succeeded":
        return Exit.OK
    if phase == "Failed":
        return Exit.BAD_INPUT if reason in BAD_INPUT_REASONS else Exit.FAILED
    return None


def _fmt(value: Any, spec: str = ".4g") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return format(value, spec) if isinstance(value, int | float) else str(value)


def metrics_text(metrics: Mapping[str, Any]) -> str:
    """``status.metrics`` as one short clause: 'valMase 0.9988, pinball 4.13, coverage80 0.8172, ...'."""
    keys = ("valMase", "pinball", "coverage80", "skillVsGarch", "bestEpoch")
    parts = [f"{k} {_fmt(metrics[k])}" for k in keys if metrics.get(k) is not None]
    if metrics.get("foldsTotal"):
        parts.append(f"folds {metrics.get('foldsDone', 0)}/{metrics['foldsTotal']}")
    return ", ".join(parts)


def outcome(name: str, status: Mapping[str, Any]) -> tuple[Exit, str] | None:
    """(exit code, the final line) of a finished run; None while it runs."""
    phase, reason = status.get("phase"), status.get("reason")
    code = exit_code(phase, reason)
    if code is None:
        return None
    message = str(status.get("message") or "")
    if code is Exit.OK:
        metrics = metrics_text(status.get("metrics") or {})
        return code, f"{name} Succeeded" + (f": {metrics}" if metrics else "")
    return code, f"{name} Failed ({reason or 'no reason given'})" + (f": {message}" if message else "")


def progress_stats(status: Mapping[str, Any]) -> EpochStats | None:
    """``status.progress`` as the trainer's EpochStats (unknown values NaN); None before the first epoch."""
    p = status.get("progress") or {}
    if not isinstance(p.get("epoch"), int) or not isinstance(p.get("totalEpochs"), int):
        return None

    def num(key: str) -> float:
        value = p.get(key)
        return float(value) if isinstance(value, int | float) else math.nan

    best = p.get("bestEpoch")
    return EpochStats(
        epoch=p["epoch"],
        total_epochs=p["totalEpochs"],
        train_loss=num("trainLoss"),
        val_loss=num("valLoss"),
        val_mase=num("valMase"),
        samples_per_second=num("samplesPerSecond"),
        best_val_loss=num("bestValLoss"),
        best_epoch=best if isinstance(best, int) else 0,
        seconds=0.0,
    )


def epoch_line(s: EpochStats) -> str:
    """One epoch as a plain line, with the fields of the trainer's bar postfix."""
    return (
        f"epoch {s.epoch}/{s.total_epochs}: train {_fmt(s.train_loss, '.4f')}, val {_fmt(s.val_loss, '.4f')}, "
        f"mase {_fmt(s.val_mase, '.3f')}, best {_fmt(s.best_val_loss, '.4f')}@{s.best_epoch}, "
        f"{_fmt(s.samples_per_second, ',.0f')} samples/s"
    )


def summary_line(summary: Mapping[str, Any]) -> str:
    """The trainer's final ``summary`` event as one plain line."""
    m = summary.get("metrics") or {}
    head = f"summary: best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')}"
    if summary.get("early_stopped"):
        head += " (early stop)"
    head += (
        f", validation MASE {_fmt(m.get('mase'), '.4f')}, pinball {_fmt(m.get('pinball'))}, "
        f"80% coverage {_fmt(m.get('coverage_80'), '.3f')}"
    )
    return head + (f", output {summary['output']}" if summary.get("output") else "")


LogKind = Literal["epoch", "summary", "stopped_early", "resume", "start", "text"]


@dataclass(frozen=True)
class LogItem:
    """One log line of the trainer, parsed: what it is, the text to print, and its values."""

    kind: LogKind
    text: str
    stats: EpochStats | None = None
    data: Mapping[str, Any] = field(default_factory=dict)


_EPOCH_FIELDS = (
    "epoch",
    "total_epochs",
    "train_loss",
    "val_loss",
    "val_mase",
    "samples_per_second",
    "best_val_loss",
    "best_epoch",
)


def _epoch_stats(d: Mapping[str, Any]) -> EpochStats | None:
    if not all(isinstance(d.get(k), int | float) for k in _EPOCH_FIELDS):
        return None
    return EpochStats(
        **{k: d[k] for k in _EPOCH_FIELDS},
        seconds=float(d.get("seconds") or 0.0),
        checkpoint=d.get("checkpoint"),
    )


def parse_log(line: str) -> LogItem:
    """A trainer log line: its JSON event (``{"event": "epoch", ...}``) where it is one, else the text."""
    text = line.rstrip("\r\n")
    try:
        d = json.loads(text) if text.startswith("{") else None
    except ValueError:
        d = None
    if not isinstance(d, dict) or not isinstance(d.get("event"), str):
        return LogItem("text", text)
    event = d["event"]
    if event == "epoch" and (stats := _epoch_stats(d)) is not None:
        return LogItem("epoch", epoch_line(stats), stats, d)
    if event == "summary":
        return LogItem("summary", summary_line(d), data=d)
    kind: LogKind = event if event in ("stopped_early", "resume", "start") else "text"
    if d.get("message"):
        body = str(d["message"])
        if event in ("error", "stopped") and d.get("code") is not None:
            body += f" (exit code {d['code']})"
    else:
        body = ", ".join(f"{k} {v}" for k, v in d.items() if k not in ("event", "time"))
    return LogItem(kind, f"{event}: {body}" if body else event, data=d)


def _true_conditions(status: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    conds = status.get("conditions") or []
    return {str(c.get("type")): c for c in conds if isinstance(c, Mapping) and c.get("status") == "True"}


def _fold_line(fold: Mapping[str, Any]) -> str:
    head = f"fold {fold.get('index')} {fold.get('phase')}"
    if fold.get("phase") == "Succeeded":
        return head + f": MASE {_fmt(fold.get('mase'))}, pinball {_fmt(fold.get('pinball'))}"
    why = ": ".join(str(fold[k]) for k in ("reason", "message") if fold.get(k))
    return head + (f" ({why})" if why else "")


def status_lines(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """What changed in a run's status worth a line: the phase or its reason, restarts, a stall, folds done
    (walk-forward) and each fold that finished. The finished run itself is ``outcome``'s line."""
    lines = []
    phase, reason = after.get("phase"), after.get("reason")
    if (
        phase
        and phase not in FINISHED_PHASES
        and (phase, reason) != (before.get("phase"), before.get("reason"))
    ):
        message = after.get("message")
        lines.append(
            f"phase {phase}" + (f" ({reason})" if reason else "") + (f": {message}" if message else "")
        )
    if (after.get("restarts") or 0) > (before.get("restarts") or 0):
        lines.append(f"restarts: {after['restarts']}")
    stalled = _true_conditions(after).get("Stalled")
    if stalled and "Stalled" not in _true_conditions(before):
        lines.append(f"stalled: {stalled.get('message') or stalled.get('reason')}")
    if after.get("foldsDisplay") and after.get("foldsDisplay") != before.get("foldsDisplay"):
        lines.append(f"folds done: {after['foldsDisplay']}")
    done_before = {f.get("index"): f.get("phase") for f in before.get("folds") or []}
    for fold in after.get("folds") or []:
        if fold.get("phase") in FINISHED_PHASES and done_before.get(fold.get("index")) != fold.get("phase"):
            lines.append(_fold_line(fold))
    return lines


class Display(Protocol):
    """Where the follower's output goes: a tqdm bar in a terminal, plain lines elsewhere (``client_display``)."""

    def line(self, text: str) -> None: ...
    def epoch(self, stats: EpochStats) -> None: ...
    def summary(self, summary: Mapping[str, Any], text: str) -> None: ...
    def stopped_early(self, epoch: int, best_epoch: int) -> None: ...
    def close(self) -> None: ...


class Follower:
    """The two streams of one run turned into display calls, each epoch shown once.

    ``status_epochs``: take epochs from ``status.progress`` (no pod log is followed, or it cannot be read).
    ``logs_only`` (``logs --follow``): the log lines and nothing of the status; ``raw``: those lines as written."""

    def __init__(
        self, name: str, display: Display, *, status_epochs: bool, logs_only: bool = False, raw: bool = False
    ) -> None:
        self.name, self.display, self.status_epochs = name, display, status_epochs
        self.logs_only, self.raw = logs_only, raw
        self.status: Mapping[str, Any] = {}
        self.shown = 0  # the last epoch shown
        self._resumed = False  # the followed pod's trainer resumed from a checkpoint

    def run(self, obj: Mapping[str, Any]) -> tuple[Exit, str] | None:
        """A new version of the run: its changes as lines; the outcome once it has finished."""
        status = obj.get("status") or {}
        if not self.logs_only:
            for text in status_lines(self.status, status):
                self.display.line(text)
            stats = progress_stats(status)
            if self.status_epochs and stats is not None and stats.epoch > self.shown:
                self._epoch(stats)
        self.status = status
        return outcome(self.name, status)

    def pod(self, pod: str) -> None:
        """The log of ``pod`` (a new attempt of the run's trainer) follows from its first line."""
        self._resumed = False
        if not self.logs_only:
            self.display.line(f"following pod {pod}")

    def logs_unavailable(self, why: str) -> None:
        tail = "" if self.logs_only or self.status_epochs else "; epochs from status.progress"
        self.display.line(f"cannot read the pod's log ({why}){tail}")
        self.status_epochs = True

    def log(self, line: str) -> None:
        if self.raw:
            self.display.line(line)
            return
        item = parse_log(line)
        if item.kind == "epoch" and item.stats is not None:
            if item.stats.epoch > self.shown:
                self._epoch(item.stats)
            return
        if item.kind == "resume" and isinstance(item.data.get("epoch"), int):
            self.shown, self._resumed = item.data["epoch"], True
        elif item.kind == "start" and not self._resumed:
            self.shown = 0  # a new attempt without a checkpoint trains from its first epoch again
        if item.kind == "summary":
            self.display.summary(item.data, item.text)
        elif item.kind == "stopped_early":
            self.display.stopped_early(
                int(item.data.get("epoch") or 0), int(item.data.get("best_epoch") or 0)
            )
        elif item.text:
            self.display.line(item.text)

    def _epoch(self, stats: EpochStats) -> None:
        self.shown = stats.epoch
        self.display.epoch(stats)
