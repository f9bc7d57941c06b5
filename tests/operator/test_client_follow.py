"""What ``submit --follow`` shows and which exit code it ends with (trainop.client_follow): table-driven."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import pytest
from trainop.client_follow import (
    EXIT_MEANINGS,
    Exit,
    Follower,
    epoch_line,
    exit_code,
    metrics_text,
    outcome,
    parse_log,
    progress_stats,
    status_lines,
    summary_line,
)

from trainer.api.status import EpochStats

STATS = EpochStats(
    epoch=2,
    total_epochs=3,
    train_loss=0.258808,
    val_loss=0.274605,
    val_mase=0.9985,
    samples_per_second=1234.5,
    best_val_loss=0.27,
    best_epoch=1,
    seconds=4.5,
)


def epoch_json(epoch: int, total: int = 3) -> str:
    return json.dumps(
        {
            "event": "epoch",
            "time": 1.0,
            "epoch": epoch,
            "total_epochs": total,
            "train_loss": 0.25,
            "val_loss": 0.27,
            "val_mase": 0.99,
            "best_val_loss": 0.27,
            "best_epoch": epoch,
            "samples_per_second": 40.0,
            "seconds": 1.0,
            "checkpoint": None,
        }
    )


@pytest.mark.parametrize(
    ("phase", "reason", "code"),
    [
        ("Succeeded", "Completed", Exit.OK),
        ("Failed", "InvalidSpec", Exit.BAD_INPUT),  # the operator refused the spec
        ("Failed", "InvalidConfig", Exit.BAD_INPUT),  # the trainer refused spec or data (its exit code 2)
        ("Failed", "NaNLoss", Exit.FAILED),
        ("Failed", "OOMKilled", Exit.FAILED),
        ("Failed", "BackoffLimitExceeded", Exit.FAILED),
        ("Failed", None, Exit.FAILED),
        ("Running", "Running", None),
        ("Pending", "Unschedulable", None),
        ("Suspended", "Suspended", None),
        (None, None, None),
    ],
)
def test_exit_code(phase: str | None, reason: str | None, code: Exit | None) -> None:
    assert exit_code(phase, reason) == code


def test_every_exit_code_is_documented_once() -> None:
    assert set(EXIT_MEANINGS) == set(Exit)
    assert len({int(c) for c in Exit}) == len(Exit)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (
            {"phase": "Succeeded", "metrics": {"valMase": 0.9988, "pinball": 4.13, "bestEpoch": 3}},
            (Exit.OK, "r Succeeded: valMase 0.9988, pinball 4.13, bestEpoch 3"),
        ),
        ({"phase": "Succeeded"}, (Exit.OK, "r Succeeded")),
        (
            {"phase": "Failed", "reason": "InvalidConfig", "message": "the trainer refused the spec or data"},
            (Exit.BAD_INPUT, "r Failed (InvalidConfig): the trainer refused the spec or data"),
        ),
        ({"phase": "Failed"}, (Exit.FAILED, "r Failed (no reason given)")),
        ({"phase": "Running"}, None),
    ],
)
def test_outcome(status: dict[str, Any], expected: tuple[Exit, str] | None) -> None:
    assert outcome("r", status) == expected


def test_metrics_text_of_a_walk_forward_run() -> None:
    assert metrics_text({"valMase": 0.97, "foldsDone": 3, "foldsTotal": 4}) == "valMase 0.97, folds 3/4"


def test_epoch_line_has_the_bar_postfix_fields() -> None:
    assert epoch_line(STATS) == (
        "epoch 2/3: train 0.2588, val 0.2746, mase 0.999, best 0.2700@1, 1,234 samples/s"
    )
    nan = EpochStats(1, 3, math.nan, math.nan, math.nan, math.nan, math.nan, 0, 0.0)
    assert epoch_line(nan) == "epoch 1/3: train n/a, val n/a, mase n/a, best n/a@0, n/a samples/s"


def test_progress_stats_from_the_status() -> None:
    status = {
        "progress": {
            "epoch": 2,
            "totalEpochs": 3,
            "trainLoss": 0.25,
            "valLoss": None,  # NaN is stored as null
            "bestEpoch": 1,
            "samplesPerSecond": 40,
        }
    }
    stats = progress_stats(status)
    assert stats is not None and (stats.epoch, stats.total_epochs, stats.best_epoch) == (2, 3, 1)
    assert stats.train_loss == 0.25 and math.isnan(stats.val_loss) and stats.samples_per_second == 40.0
    assert progress_stats({}) is None and progress_stats({"progress": {"epoch": 1}}) is None


def test_summary_line() -> None:
    summary = {
        "best_epoch": 3,
        "epochs_run": 3,
        "early_stopped": True,
        "metrics": {"mase": 1.0, "pinball": 4.1303, "coverage_80": 0.8172},
        "output": "s3://b/run",
    }
    assert summary_line(summary) == (
        "summary: best epoch 3 of 3 (early stop), validation MASE 1.0000, pinball 4.13, 80% coverage 0.817, "
        "output s3://b/run"
    )


@pytest.mark.parametrize(
    ("line", "kind", "text"),
    [
        (
            epoch_json(1),
            "epoch",
            "epoch 1/3: train 0.2500, val 0.2700, mase 0.990, best 0.2700@1, 40 samples/s",
        ),
        ('{"event": "start", "time": 1, "message": "SOL: 65 windows"}', "start", "start: SOL: 65 windows"),
        (
            '{"event": "resume", "message": "resuming from s3://b/x", "epoch": 2}',
            "resume",
            "resume: resuming from s3://b/x",
        ),
        (
            '{"event": "error", "code": 2, "message": "/x/SOL-USD.csv: file not found"}',
            "text",
            "error: /x/SOL-USD.csv: file not found (exit code 2)",
        ),
        (
            '{"event": "stopped_early", "epoch": 5, "best_epoch": 3}',
            "stopped_early",
            "stopped_early: epoch 5, best_epoch 3",
        ),
        ('{"event": "epoch", "epoch": 1}', "text", "epoch: epoch 1"),  # not the trainer's epoch: shown as is
        ("Traceback (most recent call last):\n", "text", "Traceback (most recent call last):"),
        ("{not json", "text", "{not json"),
        ('{"no": "event"}', "text", '{"no": "event"}'),
        ("", "text", ""),
    ],
)
def test_parse_log(line: str, kind: str, text: str) -> None:
    item = parse_log(line)
    assert (item.kind, item.text) == (kind, text)


FOLD = {"index": 0, "phase": "Running"}


@pytest.mark.parametrize(
    ("before", "after", "lines"),
    [
        ({}, {"phase": "Pending", "reason": "Starting"}, ["phase Pending (Starting)"]),
        (
            {"phase": "Pending", "reason": "Starting"},
            {"phase": "Pending", "reason": "Unschedulable", "message": "0/3 nodes"},
            ["phase Pending (Unschedulable): 0/3 nodes"],
        ),
        ({"phase": "Running", "reason": "Running"}, {"phase": "Running", "reason": "Running"}, []),
        ({"phase": "Running"}, {"phase": "Succeeded", "reason": "Completed"}, []),  # outcome's line
        ({"phase": "Running", "restarts": 0}, {"phase": "Running", "restarts": 1}, ["restarts: 1"]),
        (
            {"phase": "Running"},
            {
                "phase": "Running",
                "conditions": [
                    {"type": "Stalled", "status": "True", "reason": "NoProgress", "message": "15m"}
                ],
            },
            ["stalled: 15m"],
        ),
        (
            {"phase": "Running", "foldsDisplay": "0/2", "folds": [FOLD]},
            {
                "phase": "Running",
                "foldsDisplay": "1/2",
                "folds": [
                    {"index": 0, "phase": "Succeeded", "mase": 0.97, "pinball": 3.1},
                    {"index": 1, "phase": "Failed", "reason": "OOMKilled"},
                ],
            },
            ["folds done: 1/2", "fold 0 Succeeded: MASE 0.97, pinball 3.1", "fold 1 Failed (OOMKilled)"],
        ),
    ],
)
def test_status_lines(before: dict[str, Any], after: dict[str, Any], lines: list[str]) -> None:
    assert status_lines(before, after) == lines


class Recorder:
    """A display that records what it was asked to show."""

    def __init__(self) -> None:
        self.shown: list[str] = []

    def line(self, text: str) -> None:
        self.shown.append(text)

    def epoch(self, stats: EpochStats) -> None:
        self.shown.append(f"epoch {stats.epoch}")

    def summary(self, summary: Mapping[str, Any], text: str) -> None:
        self.shown.append("summary")

    def stopped_early(self, epoch: int, best_epoch: int) -> None:
        self.shown.append(f"stopped early {epoch}")

    def close(self) -> None:
        self.shown.append("closed")


def run_obj(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "r"}, "status": status}


def progress(epoch: int) -> dict[str, Any]:
    return {"epoch": epoch, "totalEpochs": 3}


def test_epochs_from_the_log_once_each_and_again_after_a_restart_without_checkpoint() -> None:
    d = Recorder()
    f = Follower("r", d, status_epochs=False)
    f.run(
        run_obj(phase="Running", progress=progress(2))
    )  # the log is followed: the status's epochs are not shown
    f.pod("r-train-a")
    for line in ('{"event": "start"}', epoch_json(1), epoch_json(1), epoch_json(2)):
        f.log(line)
    f.pod("r-train-b")  # the next attempt, without a checkpoint: its epochs start again at 1
    f.log('{"event": "start"}')
    f.log(epoch_json(1))
    assert d.shown == [
        "phase Running",
        "following pod r-train-a",
        "start",
        "epoch 1",
        "epoch 2",
        "following pod r-train-b",
        "start",
        "epoch 1",
    ]


def test_a_resumed_attempt_goes_on_after_its_checkpoint() -> None:
    d = Recorder()
    f = Follower("r", d, status_epochs=False)
    f.pod("a")
    f.log(epoch_json(1))
    f.log(epoch_json(2))
    f.pod("b")
    f.log('{"event": "resume", "message": "resuming from s3://b/x (epoch 1/3)", "epoch": 1}')
    f.log('{"event": "start"}')
    f.log(epoch_json(2))
    f.log('{"event": "stopped_early", "epoch": 2, "best_epoch": 1}')
    f.log('{"event": "summary", "metrics": {}}')
    assert d.shown[-5:] == [
        "resume: resuming from s3://b/x (epoch 1/3)",
        "start",
        "epoch 2",
        "stopped early 2",
        "summary",
    ]


def test_epochs_from_the_status_when_the_log_cannot_be_read() -> None:
    d = Recorder()
    f = Follower("r", d, status_epochs=False)
    f.run(run_obj(phase="Running", progress=progress(1)))
    f.logs_unavailable("the API server answered 403: forbidden")
    f.run(run_obj(phase="Running", progress=progress(2)))
    f.run(run_obj(phase="Running", progress=progress(2)))  # throttled status: the same epoch again
    result = f.run(run_obj(phase="Succeeded", progress=progress(3)))
    assert d.shown == [
        "phase Running",
        "cannot read the pod's log (the API server answered 403: forbidden); epochs from status.progress",
        "epoch 2",
        "epoch 3",
    ]
    assert result == (Exit.OK, "r Succeeded")


def test_logs_only_and_raw() -> None:
    d = Recorder()
    f = Follower("r", d, status_epochs=False, logs_only=True, raw=True)
    assert f.run(run_obj(phase="Running", restarts=1)) is None
    f.pod("a")
    f.log(epoch_json(1))
    assert d.shown == [epoch_json(1)]
