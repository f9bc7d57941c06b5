"""Decisions taken on the validation period after training, stored in the checkpoint: which median and which
band to ship, and how far to widen the band so that it covers what it says.

Why each piece:
* **The honest median.** The daily median of crypto is close to unpredictable, and a learned median that does
  not beat persistence where the user can check it should not be shipped. So the learned median is kept only if
  a Diebold-Mariano test on the validation windows says its absolute errors are lower than persistence's at the
  5% level (one-sided; the loss differential's long-run variance uses a Bartlett kernel over the horizon, since
  overlapping multi-day forecasts are autocorrelated). Otherwise the shipped median *is* persistence and the whole
  band is re-centred on it. The rule is fixed; its outcome is not: another dataset may keep the learned median.
  The test is a dozen lines of numpy (a Newey-West sum) rather than statsmodels, which is not otherwise needed.
* **An honest band.** The same rule for the spread: the network's learned band (its input-dependent shape) is
  kept only if its pinball loss on the validation windows is significantly lower than that of the *prior band*,
  normal quantiles times the same ``sigma_t * sqrt(h)`` around the shipped median. A network that learned only
  noise in the band ships the prior, and the summary says so.
* **Calibrated bands.** Conformalised quantile regression (Romano et al. 2019) per horizon step and per pair of
  quantiles (q, 1-q): the band is widened (or narrowed) on both sides by the same amount, the ceil((n+1)(1-a))-th
  smallest of ``max(lo - y, y - hi)``, in *scaled* units (returns over ``sigma_t * sqrt(h)``) so that it transfers
  across volatility regimes and symbols. Symmetric on purpose: one-sided shifts fitted on a trending year move the
  whole band with that year's drift, which is the trend extrapolation the median avoids (measured: one-sided
  shifts cost 1-3% pinball out of sample on SOL, BTC and ETH). A quantile without a partner (an asymmetric spec)
  gets the one-sided split-conformal shift. Fitted on every trained symbol's validation windows (pooled), not only
  the evaluated one's, so that coverage holds per symbol and on symbols never trained on. The validation metrics
  of a training run are therefore in-sample for this step; walk-forward backtests are not.
* **Adaptive recalibration** (``backtest --recalibrate``): an online quantile tracker (adaptive conformal
  inference, Gibbs & Candes 2021) moves each shift by ``gamma * (q - miss)`` as each outcome becomes known (the
  forecast made at t for t+h is scored at t+h), so only past errors are used.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from trainer.dataset import Windows

SIGNIFICANCE = 0.05
ACI_GAMMA = 0.02


@dataclass
class Calibration:
    median: str  # "learned" or "persistence"
    median_test: dict[str, float]  # statistic, p_value, learned_mase, n
    shifts: list[list[float]]  # (H, Q) additive shifts in scaled units; 0 for the median
    n: int  # calibration windows
    band: str = "learned"  # "learned" or "prior"
    band_test: dict[str, float] = field(default_factory=dict)  # statistic, p_value, learned/prior pinball
    prior: list[float] = field(default_factory=list)  # (Q,) the prior band's offsets from its median

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        return cls(
            median=str(d["median"]),
            median_test={k: float(v) for k, v in d["median_test"].items()},
            shifts=[[float(x) for x in row] for row in d["shifts"]],
            n=int(d["n"]),
            band=str(d.get("band", "learned")),
            band_test={k: float(v) for k, v in d.get("band_test", {}).items()},
            prior=[float(x) for x in d.get("prior", [])],
        )

    def centre(self, scaled: np.ndarray, w: Windows, median_index: int) -> np.ndarray:
        """(N, H, Q) -> the shipped median with the shipped band around it, before the conformal shifts."""
        out = scaled.astype(np.float64)  # float64: a persistence median must be the last close exactly
        if self.median == "persistence":
            move = w.persistence_scaled().numpy() - out[..., median_index]  # (N, H)
            out = out + move[..., None]
        if self.band == "prior":
            out = out[..., median_index : median_index + 1] + np.asarray(self.prior)
        return np.asarray(out)

    def apply(self, scaled: np.ndarray, w: Windows, median_index: int) -> np.ndarray:
        """(N, H, Q) raw scaled quantiles -> shipped scaled quantiles (centred, shifted, monotone)."""
        out = self.centre(scaled, w, median_index) + np.asarray(self.shifts)[None]
        return np.sort(out, axis=-1)


def normal_offsets(quantiles: list[float]) -> np.ndarray:
    """(Q,) standard normal quantiles: the prior band's offsets from its median in scaled units."""
    return np.array([NormalDist().inv_cdf(q) for q in quantiles])


def diebold_mariano(loss_a: np.ndarray, loss_b: np.ndarray, lag: int) -> tuple[float, float]:
    """One-sided DM test that ``loss_a`` (N,) is lower than ``loss_b``: (statistic, p-value); a negative
    statistic favours a. The long-run variance is the Bartlett-weighted (Newey-West) sum of autocovariances."""
    d = np.asarray(loss_a, dtype=np.float64) - np.asarray(loss_b, dtype=np.float64)
    n = len(d)
    if n < 2:
        return 0.0, 0.5
    dc = d - d.mean()
    lrv = float(dc @ dc) / n
    for k in range(1, min(lag, n - 1) + 1):
        lrv += 2 * (1 - k / (lag + 1)) * float(dc[k:] @ dc[:-k]) / n
    if lrv <= 0:
        return 0.0, 0.5
    stat = float(d.mean()) / math.sqrt(lrv / n)
    return stat, float(NormalDist().cdf(stat))


def decide_median(scaled: np.ndarray, w: Windows, median_index: int) -> tuple[str, dict[str, float]]:
    """Learned median vs persistence on the evaluated symbol's validation windows (price units, as MASE)."""
    log_ret = scaled[..., median_index] * w.scale.numpy() + w.offset.numpy()  # (N, H)
    median = w.last_close[:, None] * np.exp(log_ret)
    err_model = np.abs(median - w.future_close).mean(axis=1)  # (N,)
    err_persistence = np.abs(w.last_close[:, None] - w.future_close).mean(axis=1)
    stat, p = diebold_mariano(err_model, err_persistence, lag=scaled.shape[1])
    test = {
        "statistic": stat,
        "p_value": p,
        "learned_mase": float(err_model.mean() / err_persistence.mean()),
        "n": float(len(err_model)),
    }
    return ("learned" if p < SIGNIFICANCE and stat < 0 else "persistence"), test


def quantile_pairs(quantiles: list[float]) -> tuple[list[tuple[int, int]], list[int]]:
    """Indices of the symmetric pairs (q, 1-q) and of the outer quantiles without a partner."""
    pairs, singles = [], []
    for j, q in enumerate(quantiles):
        partner = next((k for k, p in enumerate(quantiles) if abs(p - (1 - q)) < 1e-9), None)
        if q < 0.5 and partner is not None:
            pairs.append((j, partner))
        elif q != 0.5 and partner is None:
            singles.append(j)
    return pairs, singles


def _order_stat(values: np.ndarray, k: int) -> np.ndarray:
    """The k-th smallest (1-based, clipped to 1..n) along axis 0."""
    return np.asarray(np.sort(values, axis=0)[min(max(k, 1), len(values)) - 1])


def conformal_shifts(scaled: np.ndarray, target: np.ndarray, quantiles: list[float]) -> np.ndarray:
    """(N, H, Q) quantiles, (N, H) targets -> (H, Q) additive shifts: CQR per pair (q, 1-q) and horizon step (the
    band widens by the same amount on both sides), one-sided split conformal for a quantile without a partner."""
    n = scaled.shape[0]
    shifts = np.zeros(scaled.shape[1:])
    pairs, singles = quantile_pairs(quantiles)
    for lo, hi in pairs:
        score = np.maximum(scaled[..., lo] - target, target - scaled[..., hi])  # (N, H)
        widen = _order_stat(score, math.ceil((n + 1) * (quantiles[hi] - quantiles[lo])))  # (H,)
        shifts[:, lo], shifts[:, hi] = -widen, widen
    for j in singles:
        resid = target - scaled[..., j]
        q = quantiles[j]
        k = math.ceil((n + 1) * q) if q > 0.5 else math.floor((n + 1) * q)
        shifts[:, j] = _order_stat(resid, k)
    return shifts


def band_pinball(scaled: np.ndarray, w: Windows, quantiles: list[float]) -> np.ndarray:
    """(N,) pinball of the outer quantiles per window, in price units (as the reported metric)."""
    log_ret = scaled * w.scale.numpy()[..., None] + w.offset.numpy()[..., None]
    prices = w.last_close[:, None, None] * np.exp(log_ret)  # (N, H, Q)
    q = np.asarray(quantiles)
    err = w.future_close[..., None] - prices
    loss = np.maximum(q * err, (q - 1) * err)[..., q != 0.5]
    return np.asarray(loss.mean(axis=(1, 2)))


def decide_band(
    scaled: np.ndarray, w: Windows, cal: Calibration, quantiles: list[float]
) -> tuple[str, dict[str, float]]:
    """The learned band vs the prior band around the same shipped median, on the evaluated symbol's validation."""
    m = quantiles.index(0.5)
    learned = Calibration(cal.median, cal.median_test, [], cal.n, "learned", prior=cal.prior)
    prior = Calibration(cal.median, cal.median_test, [], cal.n, "prior", prior=cal.prior)
    loss_l = band_pinball(learned.centre(scaled, w, m), w, quantiles)
    loss_p = band_pinball(prior.centre(scaled, w, m), w, quantiles)
    stat, p = diebold_mariano(loss_l, loss_p, lag=scaled.shape[1])
    test = {
        "statistic": stat,
        "p_value": p,
        "learned_pinball": float(loss_l.mean()),
        "prior_pinball": float(loss_p.mean()),
    }
    return ("learned" if p < SIGNIFICANCE and stat < 0 else "prior"), test


def fit_calibration(
    val_scaled: np.ndarray, val: Windows, calib_scaled: np.ndarray, calib: Windows, quantiles: list[float]
) -> Calibration:
    """Decide the median, then the band, on ``val`` (the evaluated symbol); fit the CQR shifts of the shipped band
    on ``calib`` (every trained symbol)."""
    m = quantiles.index(0.5)
    median, median_test = decide_median(val_scaled, val, m)
    prior = normal_offsets(quantiles)
    cal = Calibration(median, median_test, [], len(calib), prior=[float(x) for x in prior - prior[m]])
    cal.band, cal.band_test = decide_band(val_scaled, val, cal, quantiles)
    centred = cal.centre(calib_scaled, calib, m)
    cal.shifts = conformal_shifts(centred, calib.target.numpy(), quantiles).tolist()
    return cal


def adaptive(
    scaled: np.ndarray, target: np.ndarray, quantiles: list[float], gamma: float = ACI_GAMMA
) -> np.ndarray:
    """Online recalibration over consecutive daily origins: (N, H, Q) -> (N, H, Q), using past outcomes only.

    The forecast from origin j for step h is scored once origin j + h is reached. Each pair (q, 1-q) widens by
    ``gamma * (miss - a)`` on both sides (miss: the outcome fell outside the pair, a: its nominal miss rate); a
    quantile without a partner moves by ``gamma * (q - 1[target < quantile])``. The median is left alone."""
    n, horizon, nq = scaled.shape
    pairs, singles = quantile_pairs(quantiles)
    shift = np.zeros((horizon, nq))
    out = np.empty_like(scaled)
    for i in range(n):
        for h in range(
            horizon
        ):  # known at the close of origin i: the forecast made at i - (h + 1) for step h + 1
            j = i - (h + 1)
            if j < 0:
                continue
            y = target[j, h]
            for lo, hi in pairs:
                miss = float(y < out[j, h, lo] or y > out[j, h, hi])
                step = gamma * (miss - (1 - quantiles[hi] + quantiles[lo]))
                shift[h, lo] -= step
                shift[h, hi] += step
            for k in singles:
                shift[h, k] += gamma * (quantiles[k] - float(y < out[j, h, k]))
        out[i] = scaled[i] + shift
    return np.sort(out, axis=-1)
