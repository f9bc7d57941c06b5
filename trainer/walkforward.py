"""Walk-forward backtests: retrain on everything before each fold, forecast the fold, pool the forecasts.

Why: one validation period says little about a forecaster; what quants trust is the forecast a model would have
made at each date with only the data available then (darts' ``historical_forecasts(retrain=True)``,
statsforecast's ``cross_validation``). Folds start every ``refit_every`` days from ``start``; fold k trains the
spec exactly as ``run`` would (validation carved from its own past, early stopping, the median decision and the
band's recalibration) on candles strictly before its start -- every series is cut there, so nothing from the
fold reaches its training -- and forecasts from every origin whose first target day lies in the fold. Baselines
are refitted per fold on the same past. ``jobs > 1`` trains folds in parallel processes (spawned, each with an
equal share of the process's torch threads); the folds are independent, so the result does not depend on the
order they finish in.

Why every fold goes through ``FoldStats``: on the cluster each fold is one pod (``python -m trainer fold``,
``walk_forward_fold``) and the operator pools the pods' sufficient statistics with
``trainer.api.foldstats.pooled``. The local walk-forward reduces its folds to the same statistics and pools them
with the same function, and both plan their folds with ``plan`` (``fold_ranges``), so the CLI and the cluster
print the same numbers for the same spec and data. Pooling is exact (the metrics of the concatenated forecasts,
not an average of fold averages).
"""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainer.api.foldstats import FoldStats, fold_ranges, pooled
from trainer.api.manifest import SpecError
from trainer.api.spec import TrainingRunSpec
from trainer.candles import Candles, DataError
from trainer.dataset import Windows, make_windows, split_windows
from trainer.evaluate import EvaluationError, Forecaster
from trainer.fold_sums import fold_stats


@dataclass(frozen=True)
class Fold:
    index: int
    start: pd.Timestamp  # first target day of the fold's first origin; training data ends the day before
    end: pd.Timestamp  # first target day of the fold's last origin


@dataclass
class FoldResult:
    fold: Fold
    prices: np.ndarray  # (N, H, Q)
    bands: dict[str, np.ndarray]  # baseline name -> (N, H, Q)
    actual: np.ndarray  # (N, H)
    last_close: np.ndarray  # (N,)
    median: str
    band: str
    epochs: int
    train_seconds: float


def parse_days(text: str) -> int:
    """'90d' or '90' -> 90 (days); SpecError naming the flag otherwise."""
    raw = text.strip().lower().removesuffix("d")
    if not raw.isdigit() or int(raw) < 1:
        raise SpecError("--refit-every", [f"'{text}': expected a number of days such as 90d"])
    return int(raw)


def make_folds(start: pd.Timestamp, end: pd.Timestamp, every_days: int) -> list[Fold]:
    """Consecutive folds of ``every_days`` first-target days covering [start, end] (``fold_ranges``)."""
    ranges = fold_ranges(start.date(), end.date(), every_days)
    return [Fold(i, pd.Timestamp(s), pd.Timestamp(e)) for i, (s, e) in enumerate(ranges)]


@dataclass(frozen=True)
class Plan:
    """What a walk-forward trains: the evaluated spec, the target cut at the end, the folds."""

    spec: TrainingRunSpec
    target: Candles
    folds: list[Fold]


def plan(
    spec: TrainingRunSpec,
    target: Candles,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp | None,
    refit_every_days: int,
) -> Plan:
    """The folds of every origin whose whole horizon lies in [start, end] (end: the target's last day if None)."""
    spec = evaluated_spec(spec, target.symbol)
    horizon = spec.data.horizon
    if end is not None:
        target = Candles(
            target.symbol, target.frame[target.frame.index <= end], target.source, target.filled_days
        )
    last = target.frame.index[-1] - pd.Timedelta(days=horizon - 1)  # the last first-target day, full horizon
    if start > last:
        raise EvaluationError(
            f"{target.source}: --start {start.date()} is after the last day with a full {horizon}-day horizon "
            f"({last.date()})"
        )
    return Plan(spec, target, make_folds(start, last, refit_every_days))


def spec_plan(spec: TrainingRunSpec, target: Candles) -> Plan:
    """The plan of ``spec.walkForward`` on ``target``: the folds the operator sized its Indexed Job for."""
    wf = spec.walk_forward
    if wf is None:
        raise SpecError("spec.walkForward", ["not set: give start, end and refitEvery to train a fold"])
    end = pd.Timestamp(wf.end)
    data_last = target.frame.index[-1]
    if data_last < end:
        raise DataError(
            f"{target.source}: spec.walkForward.end {wf.end} is after the data's last date "
            f"{data_last.date()}; give an earlier end or data up to {wf.end}"
        )
    p = plan(spec, target, start=pd.Timestamp(wf.start), end=end, refit_every_days=wf.refit_days)
    # One definition of the folds: the operator's (from the spec alone) and this one (from the data) agree.
    assert [(f.start.date(), f.end.date()) for f in p.folds] == wf.folds(spec.data.horizon)
    return p


def evaluated_spec(spec: TrainingRunSpec, symbol: str) -> TrainingRunSpec:
    """The spec that forecasts ``symbol``: a trained series moves to the front (its validation carves the cut);
    any other symbol is zero-shot and the spec trains unchanged."""
    if symbol not in spec.all_symbols:
        return spec
    symbols = [symbol, *(s for s in spec.all_symbols if s != symbol)]
    return spec.model_copy(update={"symbol": symbol, "symbols": symbols})


def train_before(
    spec: TrainingRunSpec, candles: list[Candles], before: pd.Timestamp
) -> tuple[Forecaster, int]:
    """Train ``spec`` on every series cut strictly before ``before``: (calibrated forecaster, epochs run)."""
    from trainer.device import resolve_device
    from trainer.loop import StopFlag, Trainer
    from trainer.run import calibrated_forecaster

    past = [Candles(c.symbol, c.frame[c.frame.index < before], c.source, c.filled_days) for c in candles]
    d = spec.data
    split = split_windows(past, d.input_window, d.horizon, d.validation_fraction)
    trainer = Trainer(spec, split, resolve_device(spec.training.device))
    stop = StopFlag()  # never set: a walk-forward is stopped as a whole
    while not trainer.done:
        trainer.train_epoch(stop)
        trainer.finish_epoch(0.0)
    return calibrated_forecaster(trainer, split), trainer.loop.epoch


def fold_windows(fc: Forecaster, frame: pd.DataFrame, fold: Fold, symbol: str) -> Windows:
    idx, _ = fc.symbol_index(symbol)
    d = fc.spec.data
    return make_windows(
        frame,
        idx,
        d.input_window,
        d.horizon,
        first_origin=fold.start - pd.Timedelta(days=1),
        last_origin=fold.end - pd.Timedelta(days=1),
        last_target=frame.index[-1],
    )


def run_fold(
    spec: TrainingRunSpec,
    candles: list[Candles],
    target: Candles,
    fold: Fold,
    recalibrate: bool,
    threads: int,
) -> FoldResult:
    """Train on the past of ``fold`` and forecast it (in a worker process when jobs > 1)."""
    from trainer.baselines import baseline_bands

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    fc, epochs = train_before(spec, candles, fold.start)
    train_seconds = time.perf_counter() - t0
    frame = target.frame
    w = fold_windows(fc, frame, fold, target.symbol)
    if len(w) == 0:
        raise EvaluationError(
            f"fold {fold.index} ({fold.start.date()}..{fold.end.date()}): no complete window"
        )
    origins = frame.index.get_indexer(w.origin)
    fit_end = int(frame.index.searchsorted(fold.start))
    bands = baseline_bands(frame["close"].to_numpy(), origins, w.target.shape[1], fc.quantiles, fit_end)
    cal = fc.calibration
    assert cal is not None  # train_before always calibrates
    prices = fc.prices(w, recalibrate=recalibrate)
    return FoldResult(
        fold, prices, bands, w.future_close, w.last_close, cal.median, cal.band, epochs, train_seconds
    )


def stats_of(r: FoldResult, quantiles: list[float]) -> FoldStats:
    """A fold's forecasts as the sufficient statistics a pod reports."""
    return fold_stats(
        r.prices,
        r.actual,
        r.last_close,
        quantiles,
        r.bands,
        index=r.fold.index,
        start=str(r.fold.start.date()),
        end=str(r.fold.end.date()),
        median=r.median,
        band=r.band,
        epochs=r.epochs,
        train_seconds=round(r.train_seconds, 2),
    )


def fold_row(s: FoldStats) -> dict[str, Any]:
    """One fold's line of the report: its dates, decisions and metrics (the pooled metrics of itself alone)."""
    m = pooled([s])
    keep = ("n", "mae", "mase", "pinball", "coverage_80", "width", "baselines")
    return {
        "index": s.index,
        "start": s.start,
        "end": s.end,
        "train_end": str((pd.Timestamp(s.start) - pd.Timedelta(days=1)).date()),
        "median": s.median,
        "band": s.band,
        "epochs": s.epochs,
        "train_seconds": s.train_seconds,
        **{k: m[k] for k in keep},
    }


def walk_forward_fold(
    spec: TrainingRunSpec, candles: list[Candles], target: Candles, index: int, recalibrate: bool = False
) -> tuple[FoldStats, int]:
    """Fold ``index`` of ``spec.walkForward`` exactly as ``walk_forward`` trains it: (its statistics, the number
    of folds). ``candles``: the spec's series; ``target``: the data of ``spec.symbol`` (at least up to the end)."""
    p = spec_plan(spec, target)
    if not 0 <= index < len(p.folds):
        raise IndexError(f"fold {index} of {len(p.folds)}")  # the CLI checks the index against the spec first
    r = run_fold(p.spec, candles, p.target, p.folds[index], recalibrate, torch.get_num_threads())
    return stats_of(r, p.spec.model.quantiles), len(p.folds)


def walk_forward(
    spec: TrainingRunSpec,
    candles: list[Candles],
    target: Candles,
    *,
    start: pd.Timestamp,
    end: pd.Timestamp | None = None,
    refit_every_days: int = 90,
    jobs: int = 1,
    recalibrate: bool = False,
    on_fold: Any = None,
) -> dict[str, Any]:
    """Every origin whose whole horizon lies in [start, end] (as ``backtest``), in folds of ``refit_every_days``.
    ``candles``: the spec's training series (``target``'s symbol among them unless zero-shot)."""
    p = plan(spec, target, start=start, end=end, refit_every_days=refit_every_days)
    spec, target, folds = p.spec, p.target, p.folds
    jobs = max(1, min(jobs, len(folds)))
    threads = max(1, torch.get_num_threads() // jobs)
    q = spec.model.quantiles
    results: list[FoldResult] = []
    stats: list[FoldStats] = []

    def done(r: FoldResult) -> None:
        results.append(r)
        stats.append(stats_of(r, q))
        if on_fold is not None:
            on_fold(fold_row(stats[-1]), len(folds))

    if jobs == 1:
        for f in folds:
            done(run_fold(spec, candles, target, f, recalibrate, threads))
    else:
        with ProcessPoolExecutor(jobs, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(run_fold, spec, candles, target, f, recalibrate, threads) for f in folds]
            for fut in futures:
                done(fut.result())
    out = pooled(stats)
    out["folds"] = [fold_row(s) for s in stats]
    out["extra"] = {
        "symbol": target.symbol,
        "zero_shot": target.symbol not in spec.all_symbols,
        "start": str(start.date()),
        "end": str(target.frame.index[-1].date()),
        "refit_every_days": refit_every_days,
        "recalibrated": recalibrate,
        "median_learned_folds": sum(r.median == "learned" for r in results),
        "band_learned_folds": sum(r.band == "learned" for r in results),
        "filled_days": target.filled_days,
    }
    return out
