"""Windows and the split: no target crosses the validation cut, inputs never see the future, and the
scaled targets turn back into the exact future prices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from trainer.candles import load_candles
from trainer.dataset import (
    OBSERVED,
    WARMUP_DAYS,
    make_windows,
    observed_features,
    split_windows,
    symbol_stats,
)


def test_split_has_no_leak_and_covers_validation() -> None:
    candles = [load_candles(None, s) for s in ("SOL", "BTC", "ETH")]
    split = split_windows(candles, 60, 7, 0.2, [0.1, 0.5, 0.9])
    last_train_target = split.train.origin.max() + pd.Timedelta(days=7)
    assert last_train_target < split.cut
    first_val_target = split.val.origin.min() + pd.Timedelta(days=1)
    assert first_val_target == split.cut
    assert split.val.origin.max() + pd.Timedelta(days=7) == candles[0].frame.index[-1]
    assert set(split.val.symbol.tolist()) == {0}  # validation is the evaluated symbol only
    assert set(split.train.symbol.tolist()) == {0, 1, 2}
    n = len(candles[0].frame)
    assert split.cut == candles[0].frame.index[int(n * 0.8)]


def test_inputs_do_not_depend_on_the_future() -> None:
    f = load_candles(None, "SOL").frame.iloc[:300]
    stats = symbol_stats(f, 7, [0.1, 0.5, 0.9])
    a = make_windows(f, 0, stats, 30, 5)
    g = f.copy()
    g.iloc[200:] *= 3.0  # change every price from day 200 on
    b = make_windows(g, 0, stats, 30, 5)
    origins_before = np.where(a.origin < f.index[200])[0]
    assert len(origins_before) > 100
    torch.testing.assert_close(a.observed[origins_before], b.observed[origins_before])
    torch.testing.assert_close(a.known, b.known)  # calendar only


def test_targets_invert_to_future_prices() -> None:
    f = load_candles(None, "ETH").frame.iloc[:200]
    stats = symbol_stats(f, 7, [0.1, 0.5, 0.9])
    w = make_windows(f, 0, stats, 20, 7)
    back = w.last_close[:, None] * np.exp(w.target.numpy() * w.scale.numpy() + w.offset.numpy())
    np.testing.assert_allclose(back, w.future_close, rtol=1e-5)
    i = 10
    t = w.origin[i]
    assert w.last_close[i] == f.loc[t, "close"]
    assert w.future_close[i, 6] == f.loc[t + pd.Timedelta(days=7), "close"]
    assert w.observed.shape == (len(w), 20, len(OBSERVED)) and w.known.shape == (len(w), 27, 5)
    assert w.origin[0] == f.index[WARMUP_DAYS + 20 - 1]
    assert torch.isfinite(w.observed).all()


def test_offsets_remove_in_sample_drift_and_apply_the_martingale_prior() -> None:
    f = load_candles(None, "SOL").frame.iloc[:1500]
    stats = symbol_stats(f, 7, [0.1, 0.5, 0.9])
    train = make_windows(f, 0, stats, 60, 7, training=True)
    assert abs(float(train.target.mean())) < 0.05  # demeaned: SOL's in-sample rise is not a target
    ahead = make_windows(f, 0, stats, 60, 7)
    np.testing.assert_allclose(ahead.offset[0].numpy(), -0.5 * stats.sigma**2 * np.arange(1, 8), rtol=1e-5)
    assert stats.drift > 0.002  # SOL's 2020-2024 bull market, 0.2%+ a day


def test_future_window_for_predict() -> None:
    f = load_candles(None, "SOL").frame
    stats = symbol_stats(f, 7, [0.1, 0.5, 0.9])
    w = make_windows(f, 0, stats, 60, 7, future=True)
    assert len(w) == 1 and w.origin[0] == f.index[-1]
    assert np.isnan(w.future_close).all()


def test_features_are_scale_free() -> None:
    f = load_candles(None, "BTC").frame
    sigma = symbol_stats(f, 7, [0.5]).sigma
    a = observed_features(f, sigma)
    g = f.copy()
    g[["open", "high", "low", "close"]] *= 1000.0
    b = observed_features(g, sigma)
    np.testing.assert_allclose(a[WARMUP_DAYS:], b[WARMUP_DAYS:], atol=1e-4)
