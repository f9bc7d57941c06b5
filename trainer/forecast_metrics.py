"""Forecast metrics in price units, always next to the baselines a user should compare against.

* MAE/RMSE/MAPE over every horizon step of every window, in price units.
* MASE = model MAE / MAE of persistence (the last close repeated) on the same windows. Below 1 beats persistence.
* pinball: mean over the quantiles and horizon steps, in price units; coverage_80: share of actuals inside
  [q0.1, q0.9]; width: the mean 10-90% band width relative to the last close; da_hK: share of windows where the
  sign of close[t+K] - close[t] is forecast right.
* ``baselines``: the same metrics for persistence with the series' own empirical, EWMA and GARCH(1,1)-t bands
  (``trainer.baselines``) on exactly the same windows, each with the model's ``skill`` = 1 - pinball_model /
  pinball_baseline (positive: the model's band is better).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def pinball(pred: np.ndarray, actual: np.ndarray, quantiles: list[float]) -> float:
    """pred (N, H, Q), actual (N, H) -> mean pinball loss."""
    q = np.asarray(quantiles)
    err = actual[..., None] - pred
    return float(np.mean(np.maximum(q * err, (q - 1) * err)))


def band_index(quantiles: list[float]) -> tuple[int, int]:
    """The columns of the 10% and 90% quantiles (the lowest and highest where those are not forecast)."""
    lo = quantiles.index(0.1) if 0.1 in quantiles else 0
    hi = quantiles.index(0.9) if 0.9 in quantiles else len(quantiles) - 1
    return lo, hi


def band_metrics(
    pred: np.ndarray, actual: np.ndarray, last_close: np.ndarray, quantiles: list[float]
) -> dict[str, float]:
    """pred (N, H, Q) prices, actual (N, H), last_close (N,) -> mae, mase, pinball, coverage_80, width."""
    if actual.shape[0] == 0:
        raise ValueError("no complete forecast windows to evaluate")
    median = pred[..., quantiles.index(0.5)]
    mae = float(np.mean(np.abs(median - actual)))
    naive_mae = float(np.mean(np.abs(last_close[:, None] - actual)))
    lo, hi = band_index(quantiles)
    return {
        "mae": mae,
        "mase": mae / naive_mae if naive_mae > 0 else math.nan,
        "pinball": pinball(pred, actual, quantiles),
        "coverage_80": float(np.mean((actual >= pred[..., lo]) & (actual <= pred[..., hi]))),
        "width": float(np.mean((pred[..., hi] - pred[..., lo]) / last_close[:, None])),
    }


def forecast_metrics(
    pred: np.ndarray,
    actual: np.ndarray,
    last_close: np.ndarray,
    quantiles: list[float],
    baselines: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The model's metrics (plus n, rmse, mape, naive_mae, da_hK) and, given baseline bands, ``baselines``."""
    n, horizon = actual.shape
    out: dict[str, Any] = {"n": int(n), **band_metrics(pred, actual, last_close, quantiles)}
    median = pred[..., quantiles.index(0.5)]
    err = median - actual
    out["rmse"] = float(np.sqrt(np.mean(err**2)))
    out["mape"] = float(np.mean(np.abs(err) / actual))
    out["naive_mae"] = float(np.mean(np.abs(last_close[:, None] - actual)))
    for k in (1, 7):
        if k <= horizon:
            true_up = actual[:, k - 1] > last_close
            pred_up = median[:, k - 1] > last_close
            out[f"da_h{k}"] = float(np.mean(true_up == pred_up))
        else:
            out[f"da_h{k}"] = None
    if baselines is not None:
        out["baselines"] = {}
        for name, band in baselines.items():
            b = band_metrics(band, actual, last_close, quantiles)
            b["skill"] = 1.0 - out["pinball"] / b["pinball"] if b["pinball"] > 0 else math.nan
            out["baselines"][name] = b
    return out
