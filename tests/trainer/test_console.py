"""The readable summary says what the model beats and what it loses to, in plain lines."""

from __future__ import annotations

import io
from typing import Any

import pytest

from trainer.console import summary_table


def _summary(median: str, band: str, garch_skill: float) -> dict[str, Any]:
    base = {"mae": 10.0, "mase": 1.0, "pinball": 3.5, "coverage_80": 0.83, "width": 0.23}
    metrics = {
        "n": 376, "mae": 10.0, "mase": 1.0, "pinball": 3.5 * (1 - garch_skill), "coverage_80": 0.8, "width": 0.21,
        "da_h1": 0.51, "da_h7": 0.5,
        "baselines": {
            "empirical": {**base, "pinball": 3.7, "skill": 0.05},
            "garch": {**base, "skill": garch_skill},
        },
    }  # fmt: skip
    return {
        "symbol": "SOL", "metrics": metrics, "validation": {"start": "2024-06-14", "end": "2025-06-30"},
        "best_epoch": 4, "epochs_run": 14, "early_stopped": True, "wall_seconds": 50.0, "parameters": 60183,
        "filled_days": {"SOL": 0}, "output": "runs/sol-tft",
        "median": {"shipped": median, "learned_mase": 0.9971, "p_value": 0.31},
        "band": {"shipped": band, "learned_pinball": 2.58, "prior_pinball": 2.53, "p_value": 0.82},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("median", "band", "skill", "lines"),
    [
        (
            "persistence",
            "prior",
            0.006,
            [
                "Result: the median is persistence (MASE 1.0000); band pinball +0.6% vs GARCH",
                "median: persistence (the learned median's validation MASE 0.9971 did not beat",
                "band: the prior (normal quantiles x sigma_t)",
                "band: pinball 0.6% below the garch band's",
            ],
        ),
        (
            "learned",
            "learned",
            -0.004,
            [
                "Result: validation MAE 0.00% above persistence's (MASE 1.0000); band pinball -0.4% vs GARCH",
                "median: learned (validation MASE 0.9971",
                "band: learned (beat the prior band on validation",
                "band: pinball 0.4% ABOVE the garch band's",
            ],
        ),
    ],
)
def test_summary_says_wins_and_losses(median: str, band: str, skill: float, lines: list[str]) -> None:
    text = summary_table(_summary(median, band, skill))
    for line in lines:
        assert line in text, text
    for name in ("model", "empirical", "garch", "model skill"):
        assert name in text


def test_summary_shows_the_published_forecast_and_the_promotion() -> None:
    summary = _summary("learned", "learned", 0.1)
    summary["forecast"] = {
        "origin": "2025-06-30",
        "originClose": 154.74,
        "uri": "runs/sol-tft/forecast.json",
        "quantiles": [0.1, 0.5, 0.9],
        "days": [
            {"date": "2025-07-01", "values": [150.0, 154.0, 158.0]},
            {"date": "2025-07-02", "values": [1.0, 2.0, 3.0]},
        ],
    }
    summary["promotion"] = {"message": "promoted: no current model; this run's pinball is 3.49112"}
    text = summary_table(summary)
    rows = {line[:23].strip(): line[23:] for line in text.splitlines() if line.startswith("  ")}
    assert rows["next forecast"] == (
        "2025-07-02 (day 2): 1 / 2 / 3 (q0.1 / q0.5 / q0.9) from close 154.74 on 2025-06-30; "
        "runs/sol-tft/forecast.json"
    )
    assert rows["promotion"] == "promoted: no current model; this run's pinball is 3.49112"
    assert "next forecast" not in summary_table(_summary("learned", "learned", 0.1))


def test_a_pty_without_a_size_gets_a_fixed_width_even_with_columns_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 0x0 pseudo-terminal (a test's, ``script``'s) with $COLUMNS set, as pytest-xdist sets it: a dynamic tqdm
    would ask the pty and print nothing, so the bar gets $COLUMNS columns; a sized terminal stays dynamic."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    from trainer.console import bar_width

    monkeypatch.setenv("COLUMNS", "80")
    leader, follower = pty.openpty()
    try:
        with os.fdopen(follower, "w", closefd=False) as stream:
            assert bar_width(stream) == {"ncols": 80, "nrows": 40}
            fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))
            assert bar_width(stream) == {"dynamic_ncols": True}
            assert bar_width(io.StringIO()) == {"ncols": 80, "nrows": 40}  # not a terminal at all
    finally:
        os.close(leader)
        os.close(follower)
