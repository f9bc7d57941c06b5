"""Features, targets and windows: candles -> tensors the model trains on, without leaking the future.

Why these choices:
* Everything is scaled by the series' *own current* volatility ``sigma_t``: 70% EWMA (lambda 0.94) and 30%
  one-year variance of its daily log returns, up to the origin t only (volatility mean-reverts within a week; in
  an offline comparison on 2023-2025 the blend's band beat the pure EWMA band's pinball on SOL, BTC and ETH; the
  weight is set by hand, not searched, and that comparison saw the period the README's walk-forward scores).
  Targets are ``(log(close[t+h]/close[t]) - offset) / (sigma_t * sqrt(h))``:
  the network learns *standardised* quantiles (their shape, skew and how they depend on the inputs), and prices
  come back through the same ``sigma_t``. So the band widens and narrows with the market, and a symbol the model
  never saw brings its own scale: nothing here is fitted on a training period.
* The offset is the martingale prior, computed from ``sigma_t`` too: if the price itself has no drift, a
  log-normal price's median is ``close * exp(-sigma_t^2 h / 2)`` (volatility drag), and the median is what
  minimises absolute error. The model learns departures from a driftless price; predicting zero is that prior.
  No training-period drift enters anywhere (SOL's 2020-2024 rise is +0.3% a day; a model that learns it
  extrapolates a bull market into whatever comes next).
* Observed inputs are scale-free (returns, ranges and momentum in units of ``sigma``, realised volatility
  relative to ``sigma_t``, volume changes) plus the volatility itself: its annualised log level and its ratio to
  the series' one-year level, which is what tells a 7-day band how far volatility will mean-revert.
* Calendar features (day of week, day of year, position in the window) are known in the future and feed the
  decoder.
* The split is by time: validation is the last ``validationFraction`` of the evaluated symbol's period, the same
  cut date applies to every symbol, and no training window has a target on or after the cut.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from numpy.lib.stride_tricks import sliding_window_view

from trainer.baselines import ewma_sigma
from trainer.candles import Candles, DataError

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
    "vol_level",
    "vol_ratio",
]
KNOWN = ["dow_sin", "dow_cos", "doy_sin", "doy_cos", "position"]
VOL_WARMUP = 30  # returns that seed the EWMA volatility
WARMUP_DAYS = (
    VOL_WARMUP + 1
)  # rows before the first complete feature row (returns use the day-before volatility)
LONG_RUN_DAYS = 365  # the one-year volatility level that vol_ratio compares the current one against
LONG_RUN_WEIGHT = 0.3  # share of the one-year variance in sigma_t^2 (the rest: EWMA, lambda 0.94)
SIGMA_FLOOR = 1e-4  # a flat series (a stablecoin, a halted market) must not divide by zero
CLIP = 10.0
FEATURES_VERSION = 2  # bumped whenever features or targets change meaning: old checkpoints are refused


@dataclass
class Windows:
    """A set of forecast origins. Shapes: N origins, L input days, H horizon days."""

    observed: torch.Tensor  # (N, L, F_obs) float32
    known: torch.Tensor  # (N, L+H, F_known) float32
    target: torch.Tensor  # (N, H) float32, scaled; NaN where the future is unknown (predict)
    symbol: torch.Tensor  # (N,) int64
    scale: torch.Tensor  # (N, H) float32: sigma_t*sqrt(h), to turn scaled returns back into log returns
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

    def persistence_scaled(self) -> torch.Tensor:
        """(N, H) float64: the scaled value whose price is the last close (a zero log return)."""
        return -self.offset.double() / self.scale.double()


def volatility(close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T,) closes -> (sigma_t, one-year sigma_t), both daily and known at the close of day t (NaN in warm-up).

    sigma_t^2 blends the EWMA variance with the one-year variance (LONG_RUN_WEIGHT of it): volatility mean-reverts
    over a week, so a pure EWMA over-reacts to a quiet or a wild day (GARCH's term structure, without a fit)."""
    ewma = ewma_sigma(close, warmup=VOL_WARMUP)
    r2 = pd.Series(np.diff(np.log(close), prepend=np.nan) ** 2)
    long_run = np.sqrt(r2.rolling(LONG_RUN_DAYS, min_periods=VOL_WARMUP).mean().to_numpy())
    sigma = np.sqrt((1 - LONG_RUN_WEIGHT) * ewma**2 + LONG_RUN_WEIGHT * long_run**2)
    return np.maximum(sigma, SIGMA_FLOOR), np.maximum(long_run, SIGMA_FLOOR)


def observed_features(frame: pd.DataFrame, sigma: np.ndarray, long_run: np.ndarray) -> np.ndarray:
    """(T, F_obs) scale-free features; the first WARMUP_DAYS rows are incomplete (NaN). Day t's return, range and
    body are measured in units of the volatility known the day before (a standardised shock)."""
    o, h, lo, c, v = (frame[k].to_numpy() for k in ("open", "high", "low", "close", "volume"))
    logc = np.log(c)
    r1 = np.diff(logc, prepend=np.nan)
    prev = np.concatenate([[np.nan], sigma[:-1]])
    lv = np.log1p(v)
    s = pd.Series(r1)
    lvs = pd.Series(lv)
    with np.errstate(invalid="ignore", divide="ignore"):
        feats = np.stack(
            [
                r1 / prev,
                np.log(h / lo) / prev,
                np.log(c / o) / prev,
                np.clip(np.diff(lv, prepend=np.nan), -5, 5),
                s.rolling(7).std().to_numpy() / sigma,
                s.rolling(30).std().to_numpy() / sigma,
                (logc - np.roll(logc, 7)) / (sigma * math.sqrt(7)),
                (logc - np.roll(logc, 30)) / (sigma * math.sqrt(30)),
                ((lvs - lvs.rolling(30).mean()) / (lvs.rolling(30).std() + 1e-6)).to_numpy(),
                np.log(sigma * math.sqrt(365)),
                np.log(sigma / long_run),
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


def make_windows(
    frame: pd.DataFrame,
    symbol_index: int,
    input_window: int,
    horizon: int,
    *,
    first_origin: pd.Timestamp | None = None,
    last_origin: pd.Timestamp | None = None,
    last_target: pd.Timestamp | None = None,
    future: bool = False,
) -> Windows:
    """All origins t in [first_origin, last_origin] with L complete input rows whose targets fall on or before
    ``last_target``. With ``future=True`` the single newest origin is returned with its future horizon (targets
    NaN), for ``predict``."""
    L, H = input_window, horizon
    dates = pd.DatetimeIndex(frame.index)
    close = frame["close"].to_numpy()
    sigma, long_run = volatility(close)
    obs = observed_features(frame, sigma, long_run)
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
        if last_origin is not None:
            origins = origins[dates[origins] <= last_origin]
        if last_target is not None:
            origins = origins[dates[origins + H] <= last_target]
    if len(origins) == 0 or origins[0] - L + 1 < WARMUP_DAYS:
        return empty_windows(L, H)
    cal = calendar_features(pd.DatetimeIndex(all_dates))
    obs_w = sliding_window_view(obs, (L, obs.shape[1]))[:, 0]  # (T-L+1, L, F)
    cal_w = sliding_window_view(cal, (L + H, cal.shape[1]))[:, 0]  # (T'-L-H+1, L+H, 4)
    position = (np.arange(L + H, dtype=np.float32) - (L - 1)) / H
    known = np.concatenate(
        [cal_w[origins - L + 1], np.broadcast_to(position[None, :, None], (len(origins), L + H, 1))], axis=2
    )
    last = close_ext[origins]
    fut = np.stack([close_ext[origins + h] for h in range(1, H + 1)], axis=1)  # (N, H)
    steps = np.arange(1, H + 1)
    sig = sigma[origins][:, None]  # (N, 1)
    scale = sig * np.sqrt(steps)  # (N, H)
    offset = -0.5 * sig**2 * steps  # (N, H): the martingale prior
    target = (np.log(fut / last[:, None]) - offset) / scale
    n = len(origins)
    return Windows(
        observed=torch.from_numpy(np.ascontiguousarray(obs_w[origins - L + 1])),
        known=torch.from_numpy(np.ascontiguousarray(known, dtype=np.float32)),
        target=torch.from_numpy(target.astype(np.float32)),
        symbol=torch.full((n,), symbol_index, dtype=torch.int64),
        scale=torch.from_numpy(scale.astype(np.float32)),
        offset=torch.from_numpy(offset.astype(np.float32)),
        last_close=last.astype(np.float64),
        future_close=fut.astype(np.float64),
        origin=dates[origins],
    )


def empty_windows(L: int, H: int) -> Windows:
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
    if not parts:
        raise ValueError("no windows to concatenate")
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
    val: Windows  # the evaluated symbol after the cut: early stopping, metrics, the median decision
    calib: Windows  # every symbol after the cut: the conformal recalibration of the band
    cut: pd.Timestamp  # first validation target date
    period: tuple[pd.Timestamp, pd.Timestamp]  # of the evaluated symbol
    trained: list[str]  # symbols with training windows (a series that starts after the cut has none)


def split_windows(
    candles: list[Candles],
    input_window: int,
    horizon: int,
    validation_fraction: float,
    *,
    with_train: bool = True,
) -> Split:
    """Train on every symbol before the cut; validate on the first (evaluated) symbol after it. With
    ``with_train=False`` the training windows are left empty (a rank that maps another's, ``trainer.shared``)."""
    main = candles[0].frame
    n = len(main)
    cut = main.index[int(n * (1 - validation_fraction))]
    train_parts, calib_parts, trained = [], [], []
    for i, c in enumerate(candles):
        before = c.frame[c.frame.index < cut]
        if len(before) < WARMUP_DAYS + input_window + horizon + 1:
            continue  # this series starts after the cut: nothing to learn from it without leaking
        trained.append(c.symbol)
        if with_train:
            train_parts.append(
                make_windows(before, i, input_window, horizon, last_target=cut - pd.Timedelta(days=1))
            )
        calib_parts.append(
            make_windows(c.frame, i, input_window, horizon, first_origin=cut - pd.Timedelta(days=1))
        )
    if candles[0].symbol not in trained:
        raise DataError(
            f"{candles[0].symbol}: too little data before the validation cut {cut.date()}; give more history "
            "(spec.data.start earlier) or lower spec.data.validationFraction / spec.data.inputWindow"
        )
    val = calib_parts[0]
    if len(val) == 0:
        raise DataError(
            f"{candles[0].symbol}: no validation window after the cut {cut.date()}; give more data or raise "
            "spec.data.validationFraction"
        )
    return Split(
        train=concat(train_parts) if with_train else empty_windows(input_window, horizon),
        val=val,
        calib=concat(calib_parts),
        cut=cut,
        period=(main.index[0], main.index[-1]),
        trained=trained,
    )
