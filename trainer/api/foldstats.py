"""Walk-forward folds and their sufficient statistics: pure Python, shared by the trainer and the operator.

Why a module of its own, torch-, numpy- and pandas-free: on the cluster each fold of a walk-forward is one pod of
an Indexed Job, and the operator -- which has neither the data, nor S3 credentials, nor numpy -- pools the folds
from the small JSON each pod leaves in its termination message. Pooled metrics must be exact (the metrics of all
folds' forecasts at once, never an average of fold averages), so a fold reports *sums*: absolute errors of the
median and of persistence, squared and relative errors, pinball per quantile, covered counts and band widths for
the model and for each baseline, direction hits. ``pooled`` turns any list of them into the very metrics
``trainer.forecast_metrics.forecast_metrics`` computes on the concatenated forecasts (a test proves it), and the
local ``backtest --walk-forward`` pools through the same function, so the CLI and the cluster print the same
numbers for the same spec and data.

``fold_ranges`` is the one definition of the folds (consecutive ``refit_every`` days of first-target days), used
by the local walk-forward and by the operator to size the Indexed Job.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: A termination message is cut by the kubelet at 4096 bytes: a fold's statistics must fit well inside.
MAX_MESSAGE_BYTES = 4096


def fold_ranges(start: dt.date, last: dt.date, every_days: int) -> list[tuple[dt.date, dt.date]]:
    """Consecutive ``every_days``-day ranges of first-target days covering [start, last] (the last may be short)."""
    if every_days < 1:
        raise ValueError("every_days must be at least 1")
    out: list[tuple[dt.date, dt.date]] = []
    s = start
    while s <= last:
        e = min(s + dt.timedelta(days=every_days - 1), last)
        out.append((s, e))
        s = e + dt.timedelta(days=1)
    return out


class BandSums(BaseModel):
    """Sums over a fold's N windows x H horizon steps for one forecaster (the model or a baseline)."""

    model_config = ConfigDict(extra="forbid")

    abs_err: float  # sum |median - actual|
    pinball: list[float]  # per quantile: sum of the pinball loss
    covered: int  # actuals inside [q0.1, q0.9]
    width: float  # sum of (q0.9 - q0.1) / last close


class FoldStats(BaseModel):
    """One fold's sufficient statistics (``version`` 1), as a pod writes them."""

    model_config = ConfigDict(extra="forbid")

    version: int = 1
    index: int = Field(ge=0)
    start: str  # first target day of the fold's first origin (YYYY-MM-DD)
    end: str  # ... of its last origin
    n: int = Field(ge=0)  # windows (origins)
    horizon: int = Field(ge=1)
    quantiles: list[float]
    model: BandSums
    baselines: dict[str, BandSums]
    naive_abs_err: float  # sum |last close - actual|: persistence, the MASE denominator
    sq_err: float  # sum (median - actual)^2
    abs_pct_err: float  # sum |median - actual| / actual
    da_hits: dict[str, int]  # "1", "7": windows whose direction at that step was right
    median: str = ""  # the fold's shipped median (learned | persistence)
    band: str = ""  # the fold's shipped band (learned | prior)
    epochs: int = 0
    train_seconds: float = 0.0

    @model_validator(mode="after")
    def _one_pinball_per_quantile(self) -> FoldStats:
        for name, b in {"model": self.model, **self.baselines}.items():
            if len(b.pinball) != len(self.quantiles):
                raise ValueError(f"{name}: {len(b.pinball)} pinball sums for {len(self.quantiles)} quantiles")
        return self

    def message(self) -> str:
        """The compact JSON for a termination message (checked against the kubelet's 4 KiB)."""
        text = json.dumps(self.model_dump(mode="json"), separators=(",", ":"))
        if len(text.encode()) > MAX_MESSAGE_BYTES:
            raise ValueError(f"fold statistics take {len(text.encode())} bytes, over {MAX_MESSAGE_BYTES}")
        return text


def _band(s: BandSums, points: int, naive: float, q: int) -> dict[str, float]:
    mae = s.abs_err / points
    return {
        "mae": mae,
        "mase": s.abs_err / naive if naive > 0 else math.nan,
        "pinball": sum(s.pinball) / (points * q),
        "coverage_80": s.covered / points,
        "width": s.width / points,
    }


def pooled(folds: list[FoldStats]) -> dict[str, Any]:
    """The metrics of all folds' forecasts at once, with the keys of ``forecast_metrics`` (``n``, ``mae``, ``mase``,
    ``pinball``, ``coverage_80``, ``width``, ``rmse``, ``mape``, ``naive_mae``, ``da_h1``, ``da_h7``, ``baselines``)."""
    folds = [f for f in folds if f.n > 0]
    if not folds:
        raise ValueError("no fold with forecast windows to pool")
    first = folds[0]
    if any(f.quantiles != first.quantiles or f.horizon != first.horizon for f in folds):
        raise ValueError("folds with different quantiles or horizons cannot be pooled")
    if any(
        f.baselines.keys() != first.baselines.keys() or f.da_hits.keys() != first.da_hits.keys()
        for f in folds
    ):
        raise ValueError("folds with different baselines or direction steps cannot be pooled")
    n = sum(f.n for f in folds)
    points, q = n * first.horizon, len(first.quantiles)
    naive = sum(f.naive_abs_err for f in folds)

    def add(parts: list[BandSums]) -> BandSums:
        return BandSums(
            abs_err=sum(p.abs_err for p in parts),
            pinball=[sum(p.pinball[i] for p in parts) for i in range(q)],
            covered=sum(p.covered for p in parts),
            width=sum(p.width for p in parts),
        )

    out: dict[str, Any] = {"n": n, **_band(add([f.model for f in folds]), points, naive, q)}
    out["rmse"] = math.sqrt(sum(f.sq_err for f in folds) / points)
    out["mape"] = sum(f.abs_pct_err for f in folds) / points
    out["naive_mae"] = naive / points
    for k in ("1", "7"):
        out[f"da_h{k}"] = sum(f.da_hits[k] for f in folds) / n if k in first.da_hits else None
    out["baselines"] = {}
    for name in first.baselines:
        b = _band(add([f.baselines[name] for f in folds]), points, naive, q)
        b["skill"] = 1.0 - out["pinball"] / b["pinball"] if b["pinball"] > 0 else math.nan
        out["baselines"][name] = b
    return out
