"""Windows and the split: no target crosses the validation cut, inputs never see the future, the scaled targets
turn back into the exact future prices, and every window is scaled by its own series' volatility known at the
origin (so a window never depends on another series, nor on the price level)."""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import pandas as pd
import pytest
import torch

from trainer.candles import Candles, load_candles
from trainer.dataset import (
    KNOWN,
    OBSERVED,
    WARMUP_DAYS,
    Split,
    Windows,
    calendar_features,
    make_windows,
    observed_features,
    split_windows,
    volatility,
)

PRICES = ["open", "high", "low", "close"]
L, H = 60, 7
DAY = pd.Timedelta(days=1)


@cache
def candles(symbol: str) -> Candles:
    return load_candles(None, symbol)


@cache
def sol_btc_eth() -> Split:
    return split_windows([candles(s) for s in ("SOL", "BTC", "ETH")], L, H, 0.2)


def ewma_sigma_by_hand(close: np.ndarray) -> float:
    """The EWMA(0.94) daily volatility at the last day of ``close``: seeded with the mean squared return of the
    first 30 returns, then sigma2 = 0.94 sigma2 + 0.06 r^2 for every later return."""
    r = np.diff(np.log(close))
    s2 = float(np.mean(r[:30] ** 2))
    for x in r[30:]:
        s2 = 0.94 * s2 + 0.06 * float(x) ** 2
    return math.sqrt(s2)


def sigma_by_hand(close: np.ndarray) -> float:
    """The blended daily volatility at the last day of ``close``: sigma^2 = 0.7 * the EWMA(0.94) variance + 0.3 *
    the one-year variance (the mean squared return over the last 365 returns, or all of them when fewer), floored
    at 1e-4."""
    r = np.diff(np.log(close))
    assert len(r) >= 30, "the one-year variance needs 30 returns"
    year2 = sum(float(x) ** 2 for x in r[-365:]) / len(r[-365:])
    return max(math.sqrt(0.7 * ewma_sigma_by_hand(close) ** 2 + 0.3 * year2), 1e-4)


def part(w: Windows, symbol: int) -> Windows:
    """The windows of one symbol index."""
    keep = (w.symbol == symbol).numpy()
    idx = torch.from_numpy(np.where(keep)[0])
    return Windows(
        w.observed[idx],
        w.known[idx],
        w.target[idx],
        w.symbol[idx],
        w.scale[idx],
        w.offset[idx],
        w.last_close[keep],
        w.future_close[keep],
        w.origin[keep],
    )


def assert_same_windows(a: Windows, b: Windows) -> None:
    assert len(a) == len(b) > 0
    assert a.origin.equals(b.origin)
    for x, y in (
        (a.observed, b.observed),
        (a.known, b.known),
        (a.target, b.target),
        (a.symbol, b.symbol),
        (a.scale, b.scale),
        (a.offset, b.offset),
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
    np.testing.assert_array_equal(a.last_close, b.last_close)
    np.testing.assert_array_equal(a.future_close, b.future_close)


def test_split_has_no_leak_and_covers_validation() -> None:
    split = sol_btc_eth()
    sol = candles("SOL").frame
    n = len(sol)
    assert split.cut == sol.index[int(n * 0.8)]
    assert split.period == (sol.index[0], sol.index[-1])
    assert split.trained == ["SOL", "BTC", "ETH"]
    assert set(split.train.symbol.tolist()) == {0, 1, 2}
    for i, s in enumerate(("SOL", "BTC", "ETH")):
        train = part(split.train, i)
        # every training target is before the cut, and training runs right up to it
        assert train.origin.max() + H * DAY == split.cut - DAY
        assert train.origin.min() == candles(s).frame.index[WARMUP_DAYS + L - 1]
    assert np.all(np.isfinite(split.train.future_close))
    first_val_target = split.val.origin.min() + DAY
    assert first_val_target == split.cut
    assert split.val.origin.max() + H * DAY == sol.index[-1]
    assert set(split.val.symbol.tolist()) == {0}  # validation is the evaluated symbol only


def test_calib_holds_every_trained_symbols_validation_windows_and_val_is_its_symbol_0_part() -> None:
    split = sol_btc_eth()
    assert set(split.calib.symbol.tolist()) == {0, 1, 2}
    for i, s in enumerate(("SOL", "BTC", "ETH")):
        frame = candles(s).frame
        calib = part(split.calib, i)
        # one window per day, from the origin whose first target is the cut to the last complete one
        expected = pd.date_range(split.cut - DAY, frame.index[-1] - H * DAY, freq="D")
        assert calib.origin.equals(expected), s
        assert calib.origin.min() + DAY == split.cut
        assert np.all(np.isfinite(calib.future_close))
        np.testing.assert_array_equal(calib.last_close, frame.loc[calib.origin, "close"].to_numpy())
    assert len(split.calib) == sum(len(part(split.calib, i)) for i in range(3))
    assert_same_windows(split.val, part(split.calib, 0))


@pytest.mark.parametrize(
    ("start_after_cut_days", "expect_trained"),
    [
        (10, ["SOL", "BTC"]),  # starts after the cut: nothing to learn from it without leaking
        (-(WARMUP_DAYS + L + H - 5), ["SOL", "BTC"]),  # starts just before: too short for one window
        (-(WARMUP_DAYS + L + H + 30), ["SOL", "BTC", "LATE"]),  # enough history before the cut
    ],
    ids=["after-cut", "too-short-before-cut", "long-enough"],
)
def test_a_series_without_history_before_the_cut_is_not_trained(
    start_after_cut_days: int, expect_trained: list[str]
) -> None:
    sol, btc, eth = candles("SOL"), candles("BTC"), candles("ETH")
    cut = sol_btc_eth().cut
    late = Candles("LATE", eth.frame[eth.frame.index >= cut + start_after_cut_days * DAY], "test", 0)
    split = split_windows([sol, btc, late], L, H, 0.2)
    assert split.cut == cut
    assert split.trained == expect_trained
    trained_idx = {0, 1} | ({2} if "LATE" in expect_trained else set())
    assert set(split.train.symbol.tolist()) == trained_idx
    assert split.train.origin.max() + H * DAY < cut
    assert set(split.calib.symbol.tolist()) == trained_idx


def test_an_evaluated_symbol_without_history_before_the_cut_is_an_error() -> None:
    eth = candles("ETH").frame
    short = Candles("SHORT", eth.iloc[-200:], "test", 0)  # the cut at 80% leaves it 160 days of history
    split_windows([short, candles("BTC")], 120, H, 0.2)  # 160 >= 31 + 120 + 7 + 1: one training window
    with pytest.raises(ValueError, match="too little data before the validation cut"):
        split_windows([short, candles("BTC")], 130, H, 0.2)  # 160 < 31 + 130 + 7 + 1


def test_inputs_do_not_depend_on_the_future() -> None:
    f = candles("SOL").frame.iloc[:300]
    a = make_windows(f, 0, 30, 5)
    g = f.copy()
    g.iloc[200:] *= 3.0  # change every price and volume from day 200 on
    b = make_windows(g, 0, 30, 5)
    before = np.where(a.origin < f.index[200])[0]
    after = np.where(a.origin >= f.index[200])[0]
    assert len(before) > 100 and len(after) > 0
    torch.testing.assert_close(a.observed[before], b.observed[before], rtol=0, atol=0)
    torch.testing.assert_close(a.scale[before], b.scale[before], rtol=0, atol=0)
    torch.testing.assert_close(a.offset[before], b.offset[before], rtol=0, atol=0)
    torch.testing.assert_close(a.known, b.known)  # calendar only
    # the changed days do change what is computed from them (the comparison above is not vacuous)
    assert not torch.equal(a.observed[after], b.observed[after])


@pytest.mark.parametrize("origin_row", [WARMUP_DAYS + L - 1, 200, 400, 700], ids=lambda r: f"row{r}")
def test_scale_is_the_blended_sigma_known_at_the_origin(origin_row: int) -> None:
    f = candles("SOL").frame.iloc[:800]
    w = make_windows(f, 0, L, H)
    i = int(np.where(w.origin == f.index[origin_row])[0][0])
    close = f["close"].to_numpy()
    sigma = sigma_by_hand(close[: origin_row + 1])  # from the closes up to the origin only
    # the blend differs from the pure EWMA by far more than the tolerance below: the comparison tells them apart
    assert sigma != pytest.approx(ewma_sigma_by_hand(close[: origin_row + 1]), rel=1e-4)
    steps = np.arange(1, H + 1)
    np.testing.assert_allclose(w.scale[i].numpy(), sigma * np.sqrt(steps), rtol=1e-6)
    np.testing.assert_allclose(w.offset[i].numpy(), -0.5 * sigma**2 * steps, rtol=1e-5)  # martingale prior
    # prices after the origin do not move this origin's scale, offset, inputs or last close; they do move its
    # targets
    g = f.copy()
    noise = np.exp(np.random.default_rng(origin_row).normal(0.0, 0.2, (len(f) - origin_row - 1, 1)))
    g.loc[g.index[origin_row + 1 :], PRICES] *= noise
    v = make_windows(g, 0, L, H)
    assert v.origin.equals(w.origin)
    for x, y in ((w.scale, v.scale), (w.offset, v.offset), (w.observed, v.observed)):
        torch.testing.assert_close(x[i], y[i], rtol=0, atol=0)
    assert w.last_close[i] == v.last_close[i]
    assert not torch.allclose(w.target[i], v.target[i])
    # the next origin sees the changed day 1: its scale moves (the comparison above could fail)
    assert not torch.equal(w.scale[i + 1], v.scale[i + 1])


def test_targets_invert_to_future_prices() -> None:
    f = candles("ETH").frame.iloc[:200]
    w = make_windows(f, 0, 20, 7)
    back = w.last_close[:, None] * np.exp(w.target.numpy() * w.scale.numpy() + w.offset.numpy())
    np.testing.assert_allclose(back, w.future_close, rtol=1e-5)
    for i in (0, 10, len(w) - 1):
        t = w.origin[i]
        assert w.last_close[i] == f.loc[t, "close"]
        for h in range(1, 8):
            assert w.future_close[i, h - 1] == f.loc[t + h * DAY, "close"]
    assert w.observed.shape == (len(w), 20, len(OBSERVED)) and w.known.shape == (len(w), 27, len(KNOWN))
    assert w.origin[0] == f.index[WARMUP_DAYS + 20 - 1]  # the first origin whose inputs are all complete
    assert w.origin[-1] == f.index[-1 - 7]  # the last whose targets are all known
    assert torch.isfinite(w.observed).all() and torch.isfinite(w.target).all()
    sigma, long_run = volatility(f["close"].to_numpy())
    obs = observed_features(f, sigma, long_run)
    assert np.isnan(obs[WARMUP_DAYS - 1]).any()  # one row earlier would have been incomplete
    assert np.isfinite(obs[WARMUP_DAYS:]).all()


def test_persistence_scaled_is_a_zero_log_return() -> None:
    w = make_windows(candles("SOL").frame, 0, L, H)
    ps = w.persistence_scaled().double().numpy()
    log_ret = ps * w.scale.double().numpy() + w.offset.double().numpy()
    np.testing.assert_allclose(log_ret, 0.0, atol=1e-8)
    assert (ps > 0).all()  # the martingale prior's median is below the last close: persistence is above it


def test_future_window_for_predict() -> None:
    f = candles("SOL").frame
    w = make_windows(f, 0, L, H, future=True)
    assert len(w) == 1 and w.origin[0] == f.index[-1]
    assert np.isnan(w.future_close).all() and torch.isnan(w.target).all()
    assert w.last_close[0] == f["close"].iloc[-1]
    sigma, long_run = volatility(f["close"].to_numpy())
    obs = observed_features(f, sigma, long_run)
    np.testing.assert_array_equal(w.observed[0].numpy(), obs[-L:])  # the newest L days
    future_dates = pd.date_range(f.index[-1] + DAY, periods=H, freq="D")
    np.testing.assert_allclose(w.known[0, L:, :4].numpy(), calendar_features(future_dates), atol=1e-6)
    np.testing.assert_allclose(w.scale[0].numpy(), sigma[-1] * np.sqrt(np.arange(1, H + 1)), rtol=1e-6)
    assert torch.isfinite(w.observed).all() and torch.isfinite(w.known).all()


@pytest.mark.parametrize("row", [WARMUP_DAYS, 400, 1500])
def test_features_by_hand(row: int) -> None:
    f = candles("BTC").frame
    close = f["close"].to_numpy()
    sigma, long_run = volatility(close)
    obs = observed_features(f, sigma, long_run)
    prev = sigma_by_hand(close[:row])  # the volatility known the day before
    now = sigma_by_hand(close[: row + 1])
    r = np.diff(np.log(close[: row + 1]))
    year = math.sqrt(float(np.mean(r[-365:] ** 2)))
    # the blend, not the EWMA: they differ by more than ten times the tolerance below
    assert now != pytest.approx(ewma_sigma_by_hand(close[: row + 1]), rel=1e-4)
    expect = {
        "ret_1d": math.log(close[row] / close[row - 1]) / prev,  # a shock in yesterday's volatility units
        "range_hl": math.log(f["high"].iloc[row] / f["low"].iloc[row]) / prev,
        "mom_7d": math.log(close[row] / close[row - 7]) / (now * math.sqrt(7)),
        "vol_level": math.log(now * math.sqrt(365)),
        "vol_ratio": math.log(now / year),
    }
    for name, value in expect.items():
        assert obs[row, OBSERVED.index(name)] == pytest.approx(max(-10.0, min(10.0, value)), rel=1e-5), name


def test_features_are_scale_free() -> None:
    f = candles("BTC").frame
    g = f.copy()
    g[PRICES] *= 1000.0
    sa, la = volatility(f["close"].to_numpy())
    sb, lb = volatility(g["close"].to_numpy())
    np.testing.assert_allclose(sa[WARMUP_DAYS:], sb[WARMUP_DAYS:], rtol=1e-9)
    np.testing.assert_allclose(la[WARMUP_DAYS:], lb[WARMUP_DAYS:], rtol=1e-9)
    a = observed_features(f, sa, la)
    b = observed_features(g, sb, lb)
    np.testing.assert_allclose(a[WARMUP_DAYS:], b[WARMUP_DAYS:], atol=1e-4)
    assert np.isfinite(a[WARMUP_DAYS:]).all()
    assert np.abs(a[WARMUP_DAYS:]).max() <= 10.0  # clipped


def test_a_series_windows_come_from_the_series_itself() -> None:
    """Zero-shot premise: the scale comes from the series itself, not from its price level nor other series."""
    btc = candles("BTC").frame
    a = make_windows(btc, 1, L, H)
    big = btc.copy()
    big[PRICES] *= 1000.0
    b = make_windows(big, 1, L, H)
    assert a.origin.equals(b.origin)
    for x, y in ((a.target, b.target), (a.observed, b.observed), (a.scale, b.scale), (a.offset, b.offset)):
        torch.testing.assert_close(x, y)
    np.testing.assert_allclose(b.last_close, 1000.0 * a.last_close, rtol=1e-12)
    # in a split, replacing another series leaves every other symbol's windows exactly as they were
    eth = candles("ETH")
    noise = np.exp(np.random.default_rng(3).normal(0.0, 0.1, (len(eth.frame), 1)))
    other = eth.frame.copy()
    other[PRICES] *= 1000.0 * noise
    base = sol_btc_eth()
    changed = split_windows([candles("SOL"), candles("BTC"), Candles("ETH", other, "test", 0)], L, H, 0.2)
    assert changed.cut == base.cut
    for i in (0, 1):
        assert_same_windows(part(base.train, i), part(changed.train, i))
        assert_same_windows(part(base.calib, i), part(changed.calib, i))
    assert_same_windows(base.val, changed.val)
    assert not torch.equal(part(base.train, 2).target, part(changed.train, 2).target)  # ETH itself did change
