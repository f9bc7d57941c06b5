"""Where ``submit --follow`` prints (trainop.client_display): plain lines in a pipe, the trainer's own tqdm bar
and summary table in a terminal, plain lines again where tqdm is missing."""

from __future__ import annotations

import io
import sys

import pytest
from trainop.client_display import BarDisplay, PlainDisplay, make_display

from trainer.api.status import EpochStats


def stats(epoch: int, total: int = 3) -> EpochStats:
    return EpochStats(epoch, total, 0.25, 0.27, 0.99, 40.0, 0.27, epoch, 1.0)


SUMMARY = {
    "symbol": "SOL",
    "best_epoch": 3,
    "epochs_run": 3,
    "early_stopped": False,
    "metrics": {
        "n": 25,
        "mae": 11.0,
        "mase": 0.99,
        "pinball": 4.1,
        "coverage_80": 0.8,
        "width": 0.2,
        "da_h1": 0.5,
        "da_h7": 0.5,
        "baselines": {},
    },
    "validation": {"start": "2024-10-19", "end": "2024-12-31"},
    "wall_seconds": 21.7,
    "parameters": 4919,
    "filled_days": {"SOL": 0},
    "output": "s3://b/run",
}


def test_plain_lines() -> None:
    out = io.StringIO()
    d = PlainDisplay(out)
    d.line("phase Running")
    d.epoch(stats(1))
    d.stopped_early(1, 1)
    d.summary(SUMMARY, "summary: best epoch 3 of 3")
    assert out.getvalue().splitlines() == [
        "phase Running",
        "epoch 1/3: train 0.2500, val 0.2700, mase 0.990, best 0.2700@1, 40 samples/s",
        "stopped early at epoch 1 (best 1)",
        "summary: best epoch 3 of 3",
    ]


def test_the_trainers_bar_and_summary_table_in_a_terminal() -> None:
    out = io.StringIO()
    d = make_display(out, terminal=True)
    assert isinstance(d, BarDisplay)
    d.line("following pod tiny-train-abcde")
    d.epoch(stats(2))  # re-attached at epoch 2: the bar starts at 1/3, then shows 2/3
    d.epoch(stats(3))
    d.summary(SUMMARY, "summary: plain")
    text = out.getvalue()
    assert text.startswith("following pod tiny-train-abcde\n")
    assert "training:  67%" in text and "training: 100%" in text and "3/3" in text
    assert "mase=0.990" in text  # the bar's postfix, as python -m trainer run draws it
    assert "Result: " in text and "validation period" in text and "summary: plain" not in text


def test_a_summary_of_another_version_is_one_line() -> None:
    out = io.StringIO()
    d = BarDisplay(out)
    d.summary({"metrics": {}}, "summary: plain")
    assert out.getvalue() == "summary: plain\n"


def test_not_a_terminal_or_no_tqdm_means_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(make_display(io.StringIO()), PlainDisplay)  # a StringIO is no terminal
    monkeypatch.setitem(sys.modules, "trainer.console", None)  # what the operator's image has: no tqdm
    assert isinstance(make_display(io.StringIO(), terminal=True), PlainDisplay)
