"""Features, targets and windows: candles -> tensors the model trains on, without leaking the future.

Why these choices:
* Targets are future *cumulative log returns* ``log(close[t+h] / close[t])`` minus an offset, scaled per symbol by
  the training period's daily volatility times ``sqrt(h)``, so every horizon step and every symbol contributes a
  loss of the same size. The offset is where the trend goes:
  - training windows subtract the training period's own mean daily log return (SOL's 2020-2024 rise is +0.3% a
    day; a model that learns it extrapolates a bull market into whatever comes next);
  - forecasts add the *martingale prior* instead: if the price itself has no drift, a log-normal price's median is
    ``close * exp(-sigma^2 h / 2)`` (volatility drag), and the median is what minimises absolute error.
  So the model learns zero-mean departures from a driftless price, and predicting zero is that prior.
* Observed inputs are scale-free (returns, ranges, volume changes, realised volatility), so one model can learn
  from SOL, BTC and ETH together (the symbol is a static input).
* Calendar features (day of week, day of year, position in the window) are known in the future and feed the
  decoder.
* The split is by time: validation is the last ``validationFraction`` of the evaluated symbol's period, the same
  cut date applies to every symbol, and no training window has a target on or after the cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view

from trainer.candles import Candles

OBSERVED = [
    "ret_1d",
    "range_hl",
    "body_oc",
    "volume_change",
    "vol_7d",
    "vol_30d",
    "mom_7d",
    "mom_30d",
    "volume_z",
]
KNOWN = ["dow_sin", "dow_cos", "doy_sin", "doy_cos", "position"]
WARMUP_DAYS = 30  # rows needed before the first complete feature row
CLIP = 10.0


@dataclass
class SymbolStats:
    """Per-symbol scale (training period only) saved with the model so backtests use the same transform."""

    sigma: float  # std of daily log returns
    drift: float  # mean daily log return (removed from training targets)
    band: list[list[float]]  # [h][q] empirical quantiles of h-step log returns (the empirical-band baseline)

    def offset(self, horizon: int, training: bool) -> np.ndarray:
        """(H,) log-return offset per horizon step: in-sample drift for training, the martingale prior otherwise."""
        h = np.arange(1, horizon + 1)
        per_day = self.drift if training else -0.5 * self.sigma**2
        return np.asarray(per_day * h, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {"sigma": self.sigma, "drift": self.drift, "band": self.band}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SymbolStats:
        return cls(
            sigma=float(d["sigma"]),
            drift=float(d["drift"]),
            band=[[float(x) for x in row] for row in d["band"]],
        )


@dataclass
class Windows:
    """A set of forecast origins. Shapes: N origins, L input days, H horizon days."""

    observed: torch.Tensor  # (N, L, F_obs) float32
    known: torch.Tensor  # (N, L+H, F_known) float32
    target: torch.Tensor  # (N, H) float32, scaled; NaN where the future is unknown (predict)
    symbol: torch.Tensor  # (N,) int64
    scale: torch.Tensor  # (N, H) float32: sigma*sqrt(h), to turn scaled returns back into log returns
    offset: torch.Tensor  # (N, H) float32: log return = prediction * scale + offset
    last_close: np.ndarray  # (N,) float64
    future_close: np.ndarray  # (N, H) float64, NaN where unknown
    origin: pd.DatetimeIndex  # (N,) dates of the last input day

    def __len__(self) -> int:
        return int(self.observed.shape[0])

    def to(self, device: torch.device) -> Windows:
        return Windows(
            self.observed.to(device),
            self.known.to(device),
            self.target.to(device),
            self.symbol.to(device),
            self.scale.to(device),
            self.offset.to(device),
            self.last_close,
            self.future_close,
            self.origin,
        )


def observed_features(frame: pd.DataFrame, sigma: float) -> np.ndarray:
    """(T, F_obs) scale-free features; the first WARMUP_DAYS rows are incomplete (NaN)."""
    o, h, lo, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    logc = np.log(c)
    r1 = np.diff(logc, prepend=np.nan)
    lv = np.log1p(v)
    s = pd.Series(r1)
    lvs = pd.Series(lv)
    feats = np.stack(
        [
            r1 / sigma,
            np.log(h / lo) / sigma,
            np.log(c / o) / sigma,
            np.clip(np.diff(lv, prepend=np.nan), -5, 5),
            s.rolling(7).std().to_numpy() / sigma,
            s.rolling(30).std().to_numpy() / sigma,
            (logc - np.roll(logc, 7)) / (sigma * math.sqrt(7)),
            (logc - np.roll(logc, 30)) / (sigma * math.sqrt(30)),
            ((lvs - lvs.rolling(30).mean()) / (lvs.rolling(30).std() + 1e-6)).to_numpy(),
        ],
        axis=1,
    )
    feats[:WARMUP_DAYS] = np.nan
    out: np.ndarray = np.clip(feats, -CLIP, CLIP).astype(np.float32)
    return out


def calendar_features(dates: pd.DatetimeIndex) -> np.ndarray:
    """(T, 4) day-of-week and day-of-year on the unit circle (known for any future date)."""
    dow = dates.day_of_week.to_numpy() * (2 * math.pi / 7)
    doy = (dates.day_of_year.to_numpy() - 1) * (2 * math.pi / 365.25)
    return np.stack([np.sin(dow), np.cos(dow), np.sin(doy), np.cos(doy)], axis=1).astype(np.float32)


def symbol_stats(frame: pd.DataFrame, horizon: int, quantiles: list[float]) -> SymbolStats:
    logc = np.log(frame["close"].to_numpy())
    r1 = np.diff(logc)
    sigma = float(np.std(r1)) or 1e-3
    drift = float(np.mean(r1))
    band = []
    for h in range(1, horizon + 1):
        rh = logc[h:] - logc[:-h]
        band.append([float(x) for x in np.quantile(rh, quantiles)])
    return SymbolStats(sigma=sigma, drift=drift, band=band)


def make_windows(
    frame: pd.DataFrame,
    symbol_index: int,
    stats: SymbolStats,
    input_window: int,
    horizon: int,
    *,
    first_origin: pd.Timestamp | None = None,
    last_target: pd.Timestamp | None = None,
    future: bool = False,
    training: bool = False,
) -> Windows:
    """All origins t with L complete input rows, whose targets fall on or before ``last_target`` and whose origin
    is on or after ``first_origin``. With ``future=True`` the single newest origin is returned with its future
    horizon (targets NaN), for ``predict``."""
    L, H = input_window, horizon
    obs = observed_features(frame, stats.sigma)
    dates = pd.DatetimeIndex(frame.index)
    close = frame["close"].to_numpy()
    T = len(frame)
    if future:
        all_dates = dates.append(pd.date_range(dates[-1] + pd.Timedelta(days=1), periods=H, freq="D"))
        close_ext = np.concatenate([close, np.full(H, np.nan)])
        origins = np.array([T - 1])
    else:
        all_dates, close_ext = dates, close
        origins = np.arange(WARMUP_DAYS + L - 1, T - H)
        if first_origin is not None:
            origins = origins[dates[origins] >= first_origin]
        if last_target is not None:
            origins = origins[dates[origins + H] <= last_target]
    if len(origins) == 0 or origins[0] - L + 1 < WARMUP_DAYS:
        return _empty(L, H)
    cal = calendar_features(pd.DatetimeIndex(all_dates))
    obs_w = sliding_window_view(obs, (L, obs.shape[1]))[:, 0]  # (T-L+1, L, F)
    cal_w = sliding_window_view(cal, (L + H, cal.shape[1]))[:, 0]  # (T'-L-H+1, L+H, 4)
    position = (np.arange(L + H, dtype=np.float32) - (L - 1)) / H
    known = np.concatenate(
        [cal_w[origins - L + 1], np.broadcast_to(position[None, :, None], (len(origins), L + H, 1))], axis=2
    )
    last = close_ext[origins]
    fut = np.stack([close_ext[origins + h] for h in range(1, H + 1)], axis=1)
    scale = stats.sigma * np.sqrt(np.arange(1, H + 1))
    offset = stats.offset(H, training)
    target = (np.log(fut / last[:, None]) - offset) / scale
    n = len(origins)
    return Windows(
        observed=torch.from_numpy(np.ascontiguousarray(obs_w[origins - L + 1])),
        known=torch.from_numpy(np.ascontiguousarray(known, dtype=np.float32)),
        target=torch.from_numpy(target.astype(np.float32)),
        symbol=torch.full((n,), symbol_index, dtype=torch.int64),
        scale=torch.from_numpy(np.broadcast_to(scale, (n, H)).astype(np.float32).copy()),
        offset=torch.from_numpy(np.broadcast_to(offset, (n, H)).astype(np.float32).copy()),
        last_close=last.astype(np.float64),
        future_close=fut.astype(np.float64),
        origin=dates[origins],
    )


def _empty(L: int, H: int) -> Windows:
    return Windows(
        torch.zeros(0, L, len(OBSERVED)),
        torch.zeros(0, L + H, len(KNOWN)),
        torch.zeros(0, H),
        torch.zeros(0, dtype=torch.int64),
        torch.zeros(0, H),
        torch.zeros(0, H),
        np.zeros(0),
        np.zeros((0, H)),
        pd.DatetimeIndex([]),
    )


def concat(parts: list[Windows]) -> Windows:
    parts = [p for p in parts if len(p)]
    return Windows(
        torch.cat([p.observed for p in parts]),
        torch.cat([p.known for p in parts]),
        torch.cat([p.target for p in parts]),
        torch.cat([p.symbol for p in parts]),
        torch.cat([p.scale for p in parts]),
        torch.cat([p.offset for p in parts]),
        np.concatenate([p.last_close for p in parts]),
        np.concatenate([p.future_close for p in parts]),
        pd.DatetimeIndex(np.concatenate([p.origin.to_numpy() for p in parts])),
    )


@dataclass
class Split:
    train: Windows
    val: Windows
    cut: pd.Timestamp  # first validation target date
    stats: dict[str, SymbolStats]
    period: tuple[pd.Timestamp, pd.Timestamp]  # of the evaluated symbol


def split_windows(
    candles: list[Candles],
    input_window: int,
    horizon: int,
    validation_fraction: float,
    quantiles: list[float],
) -> Split:
    """Train on every symbol before the cut; validate on the first (evaluated) symbol after it."""
    main = candles[0].frame
    n = len(main)
    cut = main.index[int(n * (1 - validation_fraction))]
    stats = {}
    train_parts = []
    for i, c in enumerate(candles):
        before = c.frame[c.frame.index < cut]
        if len(before) < WARMUP_DAYS + input_window + horizon + 1:
            continue  # this series starts after the cut: nothing to learn from it without leaking
        stats[c.symbol] = symbol_stats(before, horizon, quantiles)
        train_parts.append(
            make_windows(
                before,
                i,
                stats[c.symbol],
                input_window,
                horizon,
                last_target=cut - pd.Timedelta(days=1),
                training=True,
            )
        )
    if candles[0].symbol not in stats:
        raise ValueError(
            f"{candles[0].symbol}: too little data before the validation cut {cut.date()}; give more history "
            "(spec.data.start earlier) or lower spec.data.validationFraction / spec.data.inputWindow"
        )
    val = make_windows(
        main, 0, stats[candles[0].symbol], input_window, horizon, first_origin=cut - pd.Timedelta(days=1)
    )
    train = concat(train_parts)
    return Split(train=train, val=val, cut=cut, stats=stats, period=(main.index[0], main.index[-1]))
