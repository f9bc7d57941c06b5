"""Walk-forward: folds tile the period, no fold's future reaches its training, pooling is exact, and the CLI
(sequential and with --jobs 2) prints the same folds."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from tests.support.trainer_helpers import SAMPLE, TINY, run_trainer
from trainer.api.manifest import SpecError, parse_spec
from trainer.candles import Candles, load_candles
from trainer.walkforward import evaluated_spec, make_folds, parse_days, train_before

TINY_SPEC = {
    "symbol": "SOL",
    "symbols": ["SOL", "BTC"],
    "model": {"hiddenSize": 8, "attentionHeads": 2, "dropout": 0.0},
    "data": {"inputWindow": 20},
    "training": {"epochs": 2, "device": "cpu"},
}
WF_TINY = ["--epochs", "2", "--set", "symbols=[SOL,BTC]", *TINY[2:]]  # SOL and BTC, tiny and fast


@pytest.mark.parametrize(
    ("start", "end", "days", "expected"),
    [
        ("2025-01-01", "2025-01-10", 5, [("2025-01-01", "2025-01-05"), ("2025-01-06", "2025-01-10")]),
        ("2025-01-01", "2025-01-07", 5, [("2025-01-01", "2025-01-05"), ("2025-01-06", "2025-01-07")]),
        ("2025-01-01", "2025-01-01", 90, [("2025-01-01", "2025-01-01")]),
    ],
)
def test_folds_tile_the_period(start: str, end: str, days: int, expected: list[tuple[str, str]]) -> None:
    folds = make_folds(pd.Timestamp(start), pd.Timestamp(end), days)
    assert [(str(f.start.date()), str(f.end.date())) for f in folds] == expected
    assert [f.index for f in folds] == list(range(len(expected)))


@pytest.mark.parametrize(("text", "days"), [("90d", 90), ("30", 30), ("7D", 7)])
def test_refit_every_parses_days(text: str, days: int) -> None:
    assert parse_days(text) == days


@pytest.mark.parametrize("text", ["0d", "-5d", "3w", "ninety"])
def test_refit_every_rejects_other_units(text: str) -> None:
    with pytest.raises(SpecError, match="--refit-every"):
        parse_days(text)


def test_evaluated_symbol_moves_first_and_unknown_is_zero_shot() -> None:
    spec = parse_spec(TINY_SPEC)
    btc = evaluated_spec(spec, "BTC")
    assert btc.symbol == "BTC" and btc.all_symbols == ["BTC", "SOL"]
    assert evaluated_spec(spec, "ADA") is spec


def test_no_information_from_a_fold_reaches_its_training() -> None:
    """Perturbing every series' prices on and after the fold's start leaves the fold's model bit-identical."""
    torch.set_num_threads(1)
    spec = parse_spec(TINY_SPEC)
    before = pd.Timestamp("2024-07-01")
    candles = [load_candles(None, s) for s in ("SOL", "BTC")]

    def perturbed(c: Candles) -> Candles:
        f = c.frame.copy()
        f.loc[f.index >= before, ["open", "high", "low", "close"]] *= 3.0
        f.loc[f.index >= before, "volume"] *= 0.1
        return Candles(c.symbol, f, c.source, c.filled_days)

    a, _ = train_before(spec, candles, before)
    b, _ = train_before(spec, [perturbed(c) for c in candles], before)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=0, msg=k)
    assert a.calibration == b.calibration
    # ... and the check can fail: the same perturbation a year earlier (training data) changes the model.
    early = [Candles(c.symbol, c.frame.mul(1.0), c.source, c.filled_days) for c in candles]
    early[0].frame.loc[before - pd.Timedelta(days=400) :, "close"] *= 3.0
    c, _ = train_before(spec, early, before)
    assert any(not torch.equal(c.model.state_dict()[k], v) for k, v in a.model.state_dict().items())


@pytest.fixture(scope="module")
def walk_forward_json() -> dict[str, object]:
    proc = run_trainer(
        "backtest",
        "--walk-forward",
        "--spec",
        SAMPLE,
        "--symbol",
        "SOL",
        "--start",
        "2025-03-01",
        "--end",
        "2025-06-30",
        "--refit-every",
        "60d",
        "--json",
        *WF_TINY,
    )
    assert proc.returncode == 0, proc.stderr
    fold_events = [
        json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{"event": "fold"')
    ]
    assert [e["index"] for e in fold_events] == [0, 1]
    result: dict[str, object] = json.loads(proc.stdout)
    return result


def test_walk_forward_pools_exactly(walk_forward_json: dict[str, object]) -> None:
    r = walk_forward_json
    folds = r["folds"]
    assert isinstance(folds, list) and [f["start"] for f in folds] == ["2025-03-01", "2025-04-30"]
    # the folds partition the origins of a plain backtest over the same range: whole horizons in [start, end]
    assert (
        sum(f["n"] for f in folds)
        == r["n"]
        == (pd.Timestamp("2025-06-23") - pd.Timestamp("2025-02-28")).days + 1
    )
    for key in ("mae", "pinball"):  # pooled = window-weighted mean of the folds' (both are plain means)
        pooled = sum(f[key] * f["n"] for f in folds) / r["n"]  # type: ignore[operator]
        assert r[key] == pytest.approx(pooled, rel=1e-9)
    for name in ("empirical", "ewma", "garch"):
        base = r["baselines"][name]  # type: ignore[index]
        assert base["mase"] == pytest.approx(1.0) and 0 < base["coverage_80"] <= 1
        assert base["skill"] == pytest.approx(1 - r["pinball"] / base["pinball"])  # type: ignore[operator]
    assert r["extra"]["zero_shot"] is False  # type: ignore[index]


def test_walk_forward_in_parallel_processes_gives_the_same_folds(
    walk_forward_json: dict[str, object],
) -> None:
    proc = run_trainer(
        "backtest",
        "--walk-forward",
        "--spec",
        SAMPLE,
        "--start",
        "2025-03-01",
        "--refit-every",
        "60d",
        "--jobs",
        "2",
        "--json",
        *WF_TINY,
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert [f["n"] for f in r["folds"]] == [f["n"] for f in walk_forward_json["folds"]]  # type: ignore[attr-defined]
    # one thread per process either way (OMP_NUM_THREADS=1 in tests): the same arithmetic, the same numbers
    assert r["pinball"] == pytest.approx(walk_forward_json["pinball"], rel=1e-9)


def test_walk_forward_zero_shot_and_bad_flags(tmp_path: object) -> None:
    proc = run_trainer(
        "backtest", "--walk-forward", "--spec", SAMPLE, "--symbol", "ETH", "--start", "2025-05-01",
        "--refit-every", "90d", "--json", *WF_TINY,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["extra"]["zero_shot"] is True and r["extra"]["symbol"] == "ETH"
    assert np.isfinite(r["pinball"]) and len(r["folds"]) == 1
    bad = run_trainer(
        "backtest", "--walk-forward", "--spec", SAMPLE, "--start", "2025-05-01", "--refit-every", "3w"
    )
    assert bad.returncode == 2 and "--refit-every" in bad.stderr and "Traceback" not in bad.stderr
    missing = run_trainer("backtest", "--walk-forward", "--start", "2025-05-01")
    assert missing.returncode == 2 and "--spec" in missing.stderr
