"""Forecast metrics in price units, always next to the baselines a user should compare against.

* MAE/RMSE/MAPE over every horizon step of every window, in price units.
* MASE = model MAE / MAE of persistence (the last close repeated) on the same windows. Below 1 beats persistence.
* Pinball (mean over the quantiles) of the model and of the *empirical band* baseline: last close times the
  training period's h-step return quantiles.
* coverage_80: share of actuals inside [q0.1, q0.9]; da_hK: share of windows where the sign of
  close[t+K] - close[t] is forecast right.
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


def forecast_metrics(
    pred: np.ndarray,
    actual: np.ndarray,
    last_close: np.ndarray,
    quantiles: list[float],
    band: np.ndarray | None = None,
) -> dict[str, Any]:
    """pred (N, H, Q) prices, actual (N, H) prices, last_close (N,), band (H, Q) log-return quantiles."""
    n, horizon = actual.shape
    if n == 0:
        raise ValueError("no complete forecast windows to evaluate")
    mid = quantiles.index(0.5)
    median = pred[..., mid]  # (N, H)
    err = median - actual
    persistence_err = last_close[:, None] - actual
    mae = float(np.mean(np.abs(err)))
    naive_mae = float(np.mean(np.abs(persistence_err)))
    lo = quantiles.index(0.1) if 0.1 in quantiles else 0
    hi = quantiles.index(0.9) if 0.9 in quantiles else len(quantiles) - 1
    out: dict[str, Any] = {
        "n": int(n),
        "mae": mae,
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mape": float(np.mean(np.abs(err) / actual)),
        "mase": mae / naive_mae if naive_mae > 0 else math.nan,
        "naive_mae": naive_mae,
        "pinball": pinball(pred, actual, quantiles),
        "coverage_80": float(np.mean((actual >= pred[..., lo]) & (actual <= pred[..., hi]))),
    }
    for k in (1, 7):
        if k <= horizon:
            true_up = actual[:, k - 1] > last_close
            pred_up = median[:, k - 1] > last_close
            out[f"da_h{k}"] = float(np.mean(true_up == pred_up))
        else:
            out[f"da_h{k}"] = None
    if band is not None:
        band_pred = last_close[:, None, None] * np.exp(band[None, :, :])  # (N, H, Q)
        out["baseline_pinball"] = pinball(band_pred, actual, quantiles)
        out["baseline_coverage_80"] = float(
            np.mean((actual >= band_pred[..., lo]) & (actual <= band_pred[..., hi]))
        )
    return out
