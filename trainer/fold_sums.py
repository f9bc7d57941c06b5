"""A fold's forecasts reduced to the sums that ``trainer.api.foldstats.pooled`` turns into pooled metrics.

Why sums and not the fold's metrics: pooled metrics over several folds are means over *all* their windows, and a
mean of fold means is wrong as soon as folds differ in size (the last one usually does). Sums add up exactly.
This is the numpy side of the torch-free contract in ``trainer.api.foldstats``: the same quantities as
``trainer.forecast_metrics`` computes (the same median column, the same 10-90% band columns, the same direction
rule), summed instead of averaged, and converted to Python numbers so that they serialise as JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from trainer.api.foldstats import BandSums, FoldStats
from trainer.forecast_metrics import band_index

#: The horizon steps whose direction accuracy is reported (da_h1, da_h7), where the horizon reaches them.
DA_STEPS = (1, 7)


def band_sums(
    pred: np.ndarray, actual: np.ndarray, last_close: np.ndarray, quantiles: list[float]
) -> BandSums:
    """pred (N, H, Q) prices of one forecaster, actual (N, H), last_close (N,) -> its sums."""
    q = np.asarray(quantiles, dtype=np.float64)
    err = actual[..., None] - pred
    loss = np.maximum(q * err, (q - 1) * err)  # (N, H, Q)
    lo, hi = band_index(quantiles)
    inside = (actual >= pred[..., lo]) & (actual <= pred[..., hi])
    return BandSums(
        abs_err=float(np.sum(np.abs(pred[..., quantiles.index(0.5)] - actual))),
        pinball=[float(x) for x in loss.sum(axis=(0, 1))],
        covered=int(np.count_nonzero(inside)),
        width=float(np.sum((pred[..., hi] - pred[..., lo]) / last_close[:, None])),
    )


def direction_hits(median: np.ndarray, actual: np.ndarray, last_close: np.ndarray) -> dict[str, int]:
    """{"1": hits, "7": hits}: windows whose rise/fall at that step was forecast right (steps beyond H left out)."""
    hits: dict[str, int] = {}
    for k in DA_STEPS:
        if k <= actual.shape[1]:
            right = (actual[:, k - 1] > last_close) == (median[:, k - 1] > last_close)
            hits[str(k)] = int(np.count_nonzero(right))
    return hits


def fold_stats(
    prices: np.ndarray,
    actual: np.ndarray,
    last_close: np.ndarray,
    quantiles: list[float],
    bands: dict[str, np.ndarray],
    **meta: Any,
) -> FoldStats:
    """One fold's ``FoldStats``: prices (N, H, Q) of the model, actual (N, H), last_close (N,), bands {baseline:
    (N, H, Q)}; ``meta``: index, start, end and optionally median, band, epochs, train_seconds."""
    n, horizon = actual.shape
    median = prices[..., quantiles.index(0.5)]
    err = median - actual
    return FoldStats(
        n=int(n),
        horizon=int(horizon),
        quantiles=[float(x) for x in quantiles],
        model=band_sums(prices, actual, last_close, quantiles),
        baselines={name: band_sums(b, actual, last_close, quantiles) for name, b in bands.items()},
        naive_abs_err=float(np.sum(np.abs(last_close[:, None] - actual))),
        sq_err=float(np.sum(err**2)),
        abs_pct_err=float(np.sum(np.abs(err) / actual)),
        da_hits=direction_hits(median, actual, last_close),
        **meta,
    )
