"""The post-hoc decisions: the Diebold-Mariano test, which median and which band (learned or prior) are shipped,
the conformal (CQR) shifts of the band, applying and storing them, and the online (adaptive) recalibration that
uses past outcomes only."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import torch

from trainer.calibrate import (
    ACI_GAMMA,
    SIGNIFICANCE,
    Calibration,
    adaptive,
    conformal_shifts,
    decide_band,
    decide_median,
    diebold_mariano,
    fit_calibration,
    normal_offsets,
    quantile_pairs,
)
from trainer.candles import load_candles
from trainer.dataset import Split, Windows, make_windows, split_windows

Q = [0.1, 0.5, 0.9]
Q_ASYM = [0.1, 0.5, 0.8]  # no pair: both outer quantiles are singles
M = Q.index(0.5)
Z90 = NormalDist().inv_cdf(0.9)  # 1.2816
L, H = 60, 7


@cache
def sol_windows() -> Windows:
    """SOL's last ~400 daily origins (a validation-sized set)."""
    frame = load_candles(None, "SOL").frame
    return make_windows(frame, 0, L, H, first_origin=frame.index[-400])


@cache
def sol_btc_split() -> Split:
    return split_windows([load_candles(None, s) for s in ("SOL", "BTC")], L, H, 0.2)


def band(median: np.ndarray, half_width: float = Z90) -> np.ndarray:
    """(N, H) scaled medians -> (N, H, 3) scaled quantiles median -+ half_width."""
    return np.stack([median - half_width, median, median + half_width], axis=-1)


def price(scaled: np.ndarray, w: Windows) -> np.ndarray:
    """(N, H, Q) scaled quantiles -> prices, as trainer.evaluate.to_prices does."""
    log_ret = scaled * w.scale.numpy()[..., None] + w.offset.numpy()[..., None]
    out: np.ndarray = w.last_close[:, None, None] * np.exp(log_ret)
    return out


def persistence64(w: Windows) -> np.ndarray:
    """The scaled persistence median in float64 (its price is the last close to double precision)."""
    out: np.ndarray = -w.offset.double().numpy() / w.scale.double().numpy()
    return out


# --- Diebold-Mariano ---------------------------------------------------------------------------------------


def _dm_case(name: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    b = np.abs(rng.normal(0, 1, 500))
    if name == "identical":
        return b, b.copy()
    if name == "a-clearly-lower":
        return 0.5 * np.abs(rng.normal(0, 1, 500)), b
    if name == "a-clearly-higher":
        return 2.0 * np.abs(rng.normal(0, 1, 500)), b
    raise AssertionError(name)


@pytest.mark.parametrize(
    ("case", "check"),
    [
        ("identical", lambda s, p: s == 0.0 and p == pytest.approx(0.5)),
        ("a-clearly-lower", lambda s, p: s < 0 and p < 0.01),
        ("a-clearly-higher", lambda s, p: s > 0 and p > 0.99),  # one-sided: no evidence that a is better
    ],
)
def test_diebold_mariano_outcomes(case: str, check: Callable[[float, float], bool]) -> None:
    a, b = _dm_case(case)
    stat, p = diebold_mariano(a, b, lag=7)
    assert check(stat, p), (stat, p)
    assert p == pytest.approx(NormalDist().cdf(stat))


def test_diebold_mariano_by_hand() -> None:
    # d = a - b = [1, -1, 2, 0]; mean 0.5; centred [0.5, -1.5, 1.5, -0.5]
    # gamma0 = 5 / 4 = 1.25; gamma1 = (-0.75 - 2.25 - 0.75) / 4 = -0.9375; Bartlett weight at lag 1 of 1: 0.5
    # long-run variance = 1.25 + 2 * 0.5 * -0.9375 = 0.3125; stat = 0.5 / sqrt(0.3125 / 4)
    a = np.array([3.0, 1.0, 4.0, 2.0])
    b = np.array([2.0, 2.0, 2.0, 2.0])
    stat, p = diebold_mariano(a, b, lag=1)
    assert stat == pytest.approx(0.5 / math.sqrt(0.3125 / 4))
    assert p == pytest.approx(NormalDist().cdf(0.5 / math.sqrt(0.3125 / 4)))
    stat0, _ = diebold_mariano(a, b, lag=0)
    assert stat0 == pytest.approx(0.5 / math.sqrt(1.25 / 4))


def test_diebold_mariano_lag_widens_the_variance_of_an_autocorrelated_differential() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(0, 1, 2006)
    ma = np.convolve(e, np.ones(7) / 7, mode="valid")  # (2000,) overlapping 7-day sums: autocorrelated
    white = rng.normal(0, 1 / math.sqrt(7), 2000)
    zero = np.zeros(2000)
    for d, ratio in ((ma, 1.5), (white, None)):
        s0, _ = diebold_mariano(d - 0.02, zero, lag=0)
        s7, _ = diebold_mariano(d - 0.02, zero, lag=7)
        if ratio is not None:
            assert abs(s7) * ratio < abs(s0), (s0, s7)  # a larger long-run variance: a smaller |stat|
        else:
            assert abs(s7) == pytest.approx(
                abs(s0), rel=0.2
            )  # without autocorrelation, the lag hardly matters


# --- the median decision -----------------------------------------------------------------------------------


def _median(kind: str, w: Windows) -> np.ndarray:
    target = w.target.double().numpy()
    ps = persistence64(w)
    if kind == "oracle":
        return target  # the exact future
    if kind == "halfway-to-the-future":
        return np.asarray(ps + 0.5 * (target - ps))  # half the log return: about half persistence's error
    if kind == "persistence":
        return ps
    if kind == "persistence-plus-noise":
        return np.asarray(ps + np.random.default_rng(2).normal(0.0, 0.5, ps.shape))
    if kind == "slightly-better":  # a little of the future in a lot of noise: better, but not significantly
        return np.asarray(ps + 0.03 * (target - ps) + np.random.default_rng(2).normal(0.0, 0.2, ps.shape))
    if kind == "wrong-way":
        return np.asarray(ps - (target - ps))
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "choice"),
    [
        ("oracle", "learned"),
        ("halfway-to-the-future", "learned"),
        ("persistence", "persistence"),  # a tie keeps persistence
        ("persistence-plus-noise", "persistence"),
        ("slightly-better", "persistence"),  # a lower mean error is not enough: it has to be significant
        ("wrong-way", "persistence"),
    ],
)
def test_decide_median(kind: str, choice: str) -> None:
    w = sol_windows()
    got, test = decide_median(band(_median(kind, w)), w, M)
    assert got == choice, test
    assert test["n"] == len(w) > 300
    assert test["p_value"] == pytest.approx(NormalDist().cdf(test["statistic"]))
    if choice == "learned":
        assert test["p_value"] < SIGNIFICANCE and test["statistic"] < 0 and test["learned_mase"] < 1
    if kind == "oracle":
        assert test["learned_mase"] < 1e-5 and test["p_value"] < 1e-6
    if kind == "persistence":
        assert test["learned_mase"] == pytest.approx(1.0, abs=1e-12)
    if kind == "slightly-better":
        assert test["learned_mase"] < 1 and test["statistic"] < 0 and test["p_value"] >= SIGNIFICANCE
        # by hand: each window's mean absolute price error over the horizon, against persistence's, with the
        # long-run variance over H lags (overlapping multi-day forecasts are autocorrelated)
        p = price(band(_median(kind, w)), w)[..., M]
        err = np.abs(p - w.future_close).mean(axis=1)
        err_persistence = np.abs(w.last_close[:, None] - w.future_close).mean(axis=1)
        assert test["statistic"] == pytest.approx(diebold_mariano(err, err_persistence, lag=H)[0], rel=1e-9)
        assert test["statistic"] != pytest.approx(diebold_mariano(err, err_persistence, lag=0)[0], rel=0.05)
    if kind in ("persistence-plus-noise", "wrong-way"):
        assert test["statistic"] > 0 and test["learned_mase"] > 1


# --- conformal shifts --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quantiles", "pairs", "singles"),
    [
        (Q, [(0, 2)], []),
        (Q_ASYM, [], [0, 2]),
        ([0.05, 0.1, 0.5, 0.9], [(1, 3)], [0]),
        ([0.1, 0.25, 0.5, 0.75, 0.9], [(0, 4), (1, 3)], []),
        ([0.5], [], []),
    ],
    ids=["pair", "asymmetric", "pair-and-single", "two-pairs", "median-only"],
)
def test_quantile_pairs(quantiles: list[float], pairs: list[tuple[int, int]], singles: list[int]) -> None:
    assert quantile_pairs(quantiles) == (pairs, singles)


def _mis_scaled(mean: float, std: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A narrow band (-+0.5 where the truth needs -+1.2816 x std, shifted by mean), calibration draws and fresh
    draws never seen by the fit."""
    rng = np.random.default_rng(4)
    s = np.asarray(std)
    narrow = np.broadcast_to(np.array([-0.5, 0.0, 0.5]), (1, len(std), 3))
    calib = mean + s * rng.normal(0, 1, (2000, len(std)))
    fresh = mean + s * rng.normal(0, 1, (50_000, len(std)))
    raw_cov = np.mean((fresh >= narrow[0, :, 0]) & (fresh <= narrow[0, :, 2]), axis=0)
    assert np.all(np.abs(raw_cov - 0.8) > 0.1)  # the band really was mis-scaled
    return narrow, calib, fresh


MIS_SCALED = pytest.mark.parametrize(
    ("mean", "std"),
    [(0.0, (1.0, 1.0, 1.0)), (0.0, (1.0, 2.0, 0.5)), (0.3, (1.0, 1.0, 1.0))],
    ids=["standard-normal", "a-scale-per-step", "biased"],
)


@MIS_SCALED
def test_conformal_shifts_fix_the_two_sided_coverage_of_a_mis_scaled_pair(
    mean: float, std: tuple[float, ...]
) -> None:
    narrow, calib, fresh = _mis_scaled(mean, std)
    shifts = conformal_shifts(np.broadcast_to(narrow, (2000, len(std), 3)), calib, Q)
    assert shifts.shape == (len(std), 3)
    assert np.all(shifts[:, M] == 0.0)  # the median is not moved
    np.testing.assert_array_equal(shifts[:, 0], -shifts[:, 2])  # CQR: the same widening on both sides
    lo, hi = narrow[0, :, 0] + shifts[:, 0], narrow[0, :, 2] + shifts[:, 2]
    cov = np.mean((fresh >= lo) & (fresh <= hi), axis=0)  # per horizon step, on draws never seen
    np.testing.assert_allclose(cov, 0.8, atol=0.03)  # what CQR guarantees: the pair's two-sided coverage
    below, above = np.mean(fresh < lo, axis=0), np.mean(fresh > hi, axis=0)
    if mean == 0.0:  # a symmetric law around a symmetric band: each side misses its share
        np.testing.assert_allclose(below, 0.1, atol=0.02)
        np.testing.assert_allclose(above, 0.1, atol=0.02)
    else:  # a symmetric widening cannot fix a biased band's one-sided coverage, by design (no drift is learned)
        assert np.all(above > below + 0.05), (below, above)


@MIS_SCALED
def test_conformal_shifts_fix_the_one_sided_coverage_of_singles(mean: float, std: tuple[float, ...]) -> None:
    narrow, calib, fresh = _mis_scaled(mean, std)
    shifts = conformal_shifts(np.broadcast_to(narrow, (2000, len(std), 3)), calib, Q_ASYM)
    assert np.all(shifts[:, M] == 0.0)
    lo, hi = narrow[0, :, 0] + shifts[:, 0], narrow[0, :, 2] + shifts[:, 2]
    raw_lo, raw_hi = np.mean(fresh < narrow[0, :, 0], axis=0), np.mean(fresh < narrow[0, :, 2], axis=0)
    assert np.all(np.maximum(np.abs(raw_lo - 0.1), np.abs(raw_hi - 0.8)) > 0.05)  # wrong before the shifts
    # each single covers its own level from its side, bias included
    np.testing.assert_allclose(np.mean(fresh < lo, axis=0), 0.1, atol=0.02)
    np.testing.assert_allclose(np.mean(fresh < hi, axis=0), 0.8, atol=0.02)


def test_conformal_shifts_of_a_pair_are_the_documented_order_statistic() -> None:
    n = 100
    i = np.arange(n, dtype=np.float64)
    y = np.where(i % 2 == 0, i, -i)  # |y_i| = i, alternately above and below: both sides score
    perm = np.random.default_rng(7).permutation(n)  # the order of the windows does not matter
    target = np.stack([y, y], axis=1)[perm]  # (N, 2)
    scaled = np.zeros((n, 2, 3))
    scaled[:, 0, 0], scaled[:, 0, 2] = -1.0, 1.0  # step 1: a narrow band
    scaled[:, 1, 0], scaled[:, 1, 2] = -200.0, 200.0  # step 2: far too wide
    shifts = conformal_shifts(scaled, target, Q)
    # score = max(lo - y, y - hi) = i - 1 (step 1) and i - 200 (step 2); k = ceil(101 * 0.8) = 81: i = 80
    assert math.ceil((n + 1) * (0.9 - 0.1)) == 81
    np.testing.assert_array_equal(shifts[0], [-79.0, 0.0, 79.0])  # widened
    np.testing.assert_array_equal(shifts[1], [120.0, 0.0, -120.0])  # narrowed: a negative score narrows


def test_conformal_shifts_of_singles_are_the_one_sided_order_statistics() -> None:
    n = 100
    resid = np.random.default_rng(8).permutation(np.arange(n, dtype=np.float64))[:, None]  # 0..99 shuffled
    shifts = conformal_shifts(np.zeros((n, 1, 3)), resid, Q_ASYM)
    # q = 0.1: k = floor(101 * 0.1) = 10, the 10th smallest; q = 0.8: k = ceil(101 * 0.8) = 81, the 81st
    np.testing.assert_array_equal(shifts[0], [9.0, 0.0, 80.0])
    # a single next to a pair: the single keeps its one-sided rule, the pair its symmetric one
    q4 = [0.05, 0.1, 0.5, 0.9]
    mixed = conformal_shifts(np.zeros((n, 1, 4)), resid, q4)
    # single 0.05: k = floor(101 * 0.05) = 5, residual 4; pair: score max(-y, y) = y, the 81st smallest is 80
    np.testing.assert_array_equal(mixed[0], [4.0, -80.0, 0.0, 80.0])


# --- Calibration: apply, fit, store ------------------------------------------------------------------------


def _raw(w: Windows, seed: int = 5) -> np.ndarray:
    """A sorted, float32 (as the network returns it) band that is neither centred nor calibrated."""
    rng = np.random.default_rng(seed)
    out: np.ndarray = np.sort(rng.normal(0.3, 1.0, (len(w), H, 3)), axis=-1).astype(np.float32)
    return out


SHIFTS = [[-0.2 - 0.01 * h, 0.0, 0.3 + 0.02 * h] for h in range(H)]


def test_apply_in_persistence_mode_ships_the_last_close_as_the_median() -> None:
    w = sol_windows()
    raw = _raw(w)
    cal = Calibration(median="persistence", median_test={}, shifts=SHIFTS, n=len(w))
    out = cal.apply(raw, w, M)
    assert out.shape == raw.shape
    assert np.all(np.diff(out, axis=-1) >= 0)  # quantiles stay sorted
    p = price(out, w)
    np.testing.assert_allclose(p[..., M], np.broadcast_to(w.last_close[:, None], (len(w), H)), rtol=1e-7)
    # the whole band moved with its median, then the outer quantiles by their shifts
    centre = persistence64(w) - raw[..., M]
    s = np.asarray(SHIFTS)
    np.testing.assert_allclose(out[..., 0], raw[..., 0] + centre + s[:, 0], atol=1e-5)
    np.testing.assert_allclose(out[..., 2], raw[..., 2] + centre + s[:, 2], atol=1e-5)
    assert np.all(p[..., 0] < w.last_close[:, None]) and np.all(p[..., 2] > w.last_close[:, None])


def test_apply_in_persistence_mode_ships_the_last_close_exactly() -> None:
    w = sol_windows()
    cal = Calibration(median="persistence", median_test={}, shifts=SHIFTS, n=len(w))
    p = price(cal.apply(_raw(w), w, M), w)
    np.testing.assert_allclose(p[..., M], np.broadcast_to(w.last_close[:, None], (len(w), H)), rtol=1e-9)


def test_apply_in_learned_mode_keeps_the_median_and_sorts_crossed_quantiles() -> None:
    w = sol_windows()
    raw = _raw(w)
    cal = Calibration(median="learned", median_test={}, shifts=SHIFTS, n=len(w))
    out = cal.apply(raw, w, M)
    np.testing.assert_array_equal(out[..., M], raw[..., M])
    np.testing.assert_allclose(out[..., 2], raw[..., 2] + np.asarray(SHIFTS)[:, 2], rtol=1e-12)
    crossing = Calibration(median="learned", median_test={}, shifts=[[3.0, 0.0, -3.0]] * H, n=len(w))
    crossed = crossing.apply(raw, w, M)
    assert np.all(np.diff(crossed, axis=-1) >= 0)
    np.testing.assert_array_equal(crossed, np.sort(raw + np.array([3.0, 0.0, -3.0]), axis=-1))


PRIOR = [-Z90, 0.0, Z90]  # the prior band's offsets for Q, by hand


def test_apply_in_prior_band_mode_ships_the_median_plus_the_prior_offsets() -> None:
    w = sol_windows()
    raw, other = _raw(w), _raw(w, seed=9)
    other[..., M] = raw[..., M]  # another learned band around the same median
    for median in ("learned", "persistence"):
        cal = Calibration(
            median=median, median_test={}, shifts=[[0.0] * 3] * H, n=len(w), band="prior", prior=PRIOR
        )
        centred = cal.centre(raw, w, M)
        shipped_median = raw[..., M].astype(np.float64) if median == "learned" else persistence64(w)
        expect = shipped_median[..., None] + np.asarray(PRIOR)
        if median == "learned":
            np.testing.assert_array_equal(centred, expect)  # exactly: no other arithmetic on the way
        else:
            np.testing.assert_allclose(centred, expect, rtol=0, atol=1e-12)
            p = price(centred, w)[..., M]
            np.testing.assert_allclose(p, np.broadcast_to(w.last_close[:, None], p.shape), rtol=1e-9)
        np.testing.assert_array_equal(cal.centre(other, w, M), centred)  # the learned band's shape is ignored
        np.testing.assert_array_equal(cal.apply(raw, w, M), centred)  # zero shifts: apply ships the same
        shifted = Calibration(median, {}, SHIFTS, len(w), band="prior", prior=PRIOR)
        np.testing.assert_allclose(shifted.apply(raw, w, M), centred + np.asarray(SHIFTS), rtol=0, atol=1e-12)
        learned = Calibration(median, {}, [[0.0] * 3] * H, len(w), band="learned", prior=PRIOR)
        assert not np.allclose(learned.centre(raw, w, M), centred)  # the band setting matters


def synthetic_windows(target: np.ndarray, sigma: float = 0.03) -> Windows:
    """Windows whose (N, H) scaled targets are ``target`` (zero-size inputs: decide_band needs no features)."""
    n, horizon = target.shape
    steps = np.arange(1, horizon + 1)
    scale = np.broadcast_to(sigma * np.sqrt(steps), (n, horizon))
    offset = np.broadcast_to(-0.5 * sigma**2 * steps, (n, horizon))
    last = 100.0 * np.exp(np.random.default_rng(10).normal(0.0, 0.2, n))
    return Windows(
        observed=torch.zeros(n, 1, 0),
        known=torch.zeros(n, 1 + horizon, 0),
        target=torch.from_numpy(target.astype(np.float32)),
        symbol=torch.zeros(n, dtype=torch.int64),
        scale=torch.from_numpy(scale.astype(np.float32)),
        offset=torch.from_numpy(offset.astype(np.float32)),
        last_close=last,
        future_close=last[:, None] * np.exp(target * scale + offset),
        origin=pd.date_range("2024-01-01", periods=n, freq="D"),
    )


def pinball_by_hand(scaled: np.ndarray, w: Windows) -> np.ndarray:
    """(N,) mean pinball of the two outer quantiles of Q over the horizon, in price units."""
    p = price(scaled, w)
    y = w.future_close
    lo = np.maximum(0.1 * (y - p[..., 0]), -0.9 * (y - p[..., 0]))
    hi = np.maximum(0.9 * (y - p[..., 2]), -0.1 * (y - p[..., 2]))
    out: np.ndarray = (lo + hi).mean(axis=1) / 2
    return out


def _band_case(kind: str) -> tuple[np.ndarray, Windows]:
    """(learned band, windows) for decide_band, with a zero (learned, exact) median."""
    rng = np.random.default_rng(11)
    n = 1000
    if kind == "exact-conditional-quantiles":  # heteroskedastic: the spread changes from window to window
        spread = np.where(rng.random(n) < 0.5, 0.5, math.sqrt(1.75))[:, None]  # mean square 1, as the prior
        target = spread * rng.normal(0, 1, (n, H))
        learned = band(np.zeros((n, H)), 1.0) * spread[..., None] * Z90
    elif kind == "prior-plus-noise":  # homoskedastic: the prior is exact, the learned band only adds noise
        target = rng.normal(0, 1, (n, H))
        learned = band(np.zeros((n, H))) + rng.normal(0, 0.3, (n, H, 3)) * np.array([1.0, 0.0, 1.0])
    else:
        raise AssertionError(kind)
    return learned, synthetic_windows(target)


@pytest.mark.parametrize(
    ("kind", "choice"), [("exact-conditional-quantiles", "learned"), ("prior-plus-noise", "prior")]
)
def test_decide_band(kind: str, choice: str) -> None:
    learned, w = _band_case(kind)
    np.testing.assert_array_equal(learned[..., M], 0.0)
    cal = Calibration("learned", {}, [], len(w), prior=[float(x) for x in normal_offsets(Q)])
    np.testing.assert_allclose(cal.prior, PRIOR, rtol=1e-12)
    got, test = decide_band(learned, w, cal, Q)
    assert got == choice, test
    assert set(test) == {"statistic", "p_value", "learned_pinball", "prior_pinball"}
    assert test["p_value"] == pytest.approx(NormalDist().cdf(test["statistic"]))
    # by hand: the pinball of each band around the same median, then the DM test over H lags
    loss_l = pinball_by_hand(learned, w)
    loss_p = pinball_by_hand(band(np.zeros((len(w), H))), w)
    assert test["learned_pinball"] == pytest.approx(float(loss_l.mean()), rel=1e-9)
    assert test["prior_pinball"] == pytest.approx(float(loss_p.mean()), rel=1e-9)
    assert test["statistic"] == pytest.approx(diebold_mariano(loss_l, loss_p, lag=H)[0], rel=1e-9)
    if choice == "learned":
        assert test["statistic"] < 0 and test["p_value"] < SIGNIFICANCE
        assert test["learned_pinball"] < 0.97 * test["prior_pinball"]
    else:
        assert test["statistic"] > 0 and test["learned_pinball"] > test["prior_pinball"]


def test_decide_band_compares_both_bands_around_the_shipped_median() -> None:
    learned, w = _band_case("exact-conditional-quantiles")
    prior = [float(x) for x in normal_offsets(Q)]
    # a learned median 3 off: around it, the right band shape no longer beats the prior
    got, test = decide_band(learned + 3.0, w, Calibration("learned", {}, [], len(w), prior=prior), Q)
    assert got == "prior" and test["statistic"] > 0, test
    # the same draws moved so that persistence (a zero log return) is their exact median: with the median set to
    # persistence, both bands are re-centred there before they are compared, and the learned shape wins again
    w0 = synthetic_windows(w.target.double().numpy() + persistence64(w))
    got0, test0 = decide_band(learned + 3.0, w0, Calibration("persistence", {}, [], len(w0), prior=prior), Q)
    assert got0 == "learned", test0


@pytest.mark.parametrize(
    ("val_median", "half_width", "median", "band_choice"),
    [
        ("persistence-plus-noise", 0.5, "persistence", "prior"),  # too narrow around persistence: the prior
        ("oracle", 0.5, "learned", "learned"),  # narrow around the exact future: the learned band
        ("oracle", Z90, "learned", "prior"),  # the learned band *is* the prior: a tie keeps the prior
    ],
)
def test_fit_calibration_decides_on_val_and_shifts_the_shipped_band_on_calib(
    val_median: str, half_width: float, median: str, band_choice: str
) -> None:
    split = sol_btc_split()
    val_scaled = band(_median(val_median, split.val), half_width)
    calib_scaled = band(_median("persistence-plus-noise", split.calib), 0.5)  # a narrow, off-centre band
    cal = fit_calibration(val_scaled, split.val, calib_scaled, split.calib, Q)
    assert (cal.median, cal.band) == (median, band_choice), (cal.median_test, cal.band_test)
    assert cal.n == len(split.calib) > len(split.val)
    assert set(cal.band_test) == {"statistic", "p_value", "learned_pinball", "prior_pinball"}
    np.testing.assert_allclose(cal.prior, PRIOR, rtol=1e-12)
    shifts = np.asarray(cal.shifts)
    assert shifts.shape == (H, 3) and np.all(shifts[:, M] == 0.0)
    # the shifts are fitted on the band as it is shipped: re-centred on persistence when persistence is chosen,
    # then the prior band around that median when the prior is chosen
    centred = calib_scaled
    if median == "persistence":
        centred = calib_scaled + (persistence64(split.calib) - calib_scaled[..., M])[..., None]
    if band_choice == "prior":
        centred = centred[..., M : M + 1] + np.asarray(PRIOR)
    t = split.calib.target.numpy()
    np.testing.assert_allclose(shifts, conformal_shifts(centred, t, Q), atol=1e-5)
    np.testing.assert_allclose(shifts[:, 0], -shifts[:, 2], atol=1e-12)  # symmetric: one pair
    shipped = cal.apply(calib_scaled, split.calib, M)
    coverage = float(np.mean((t >= shipped[..., 0]) & (t <= shipped[..., 2])))
    assert 0.79 <= coverage <= 0.83  # in-sample, with the finite-sample correction


@pytest.mark.parametrize(
    ("val_median", "band_choice"), [("persistence-plus-noise", "prior"), ("oracle", "learned")]
)
def test_calibration_round_trips_through_json(val_median: str, band_choice: str) -> None:
    split = sol_btc_split()
    cal = fit_calibration(
        band(_median(val_median, split.val), 0.5),
        split.val,
        band(_median("persistence-plus-noise", split.calib)),
        split.calib,
        Q,
    )
    assert cal.band == band_choice
    text = json.dumps(cal.to_dict())
    back = Calibration.from_dict(json.loads(text))
    assert back == cal
    assert (back.band, back.band_test, back.prior) == (cal.band, cal.band_test, cal.prior)
    assert set(back.median_test) == {"statistic", "p_value", "learned_mase", "n"}
    assert set(back.band_test) == {"statistic", "p_value", "learned_pinball", "prior_pinball"}
    assert len(back.prior) == len(Q)
    raw = _raw(split.val)
    np.testing.assert_array_equal(back.apply(raw, split.val, M), cal.apply(raw, split.val, M))
    for key, value in (
        ("median", "persistence" if cal.median == "learned" else "learned"),
        ("band", "learned" if cal.band == "prior" else "prior"),
    ):
        other = Calibration.from_dict({**json.loads(text), key: value})
        assert not np.array_equal(other.apply(raw, split.val, M), cal.apply(raw, split.val, M)), key


def test_calibration_from_an_older_checkpoint_keeps_the_learned_band() -> None:
    old = {"median": "learned", "median_test": {"n": 3}, "shifts": [[-0.1, 0.0, 0.1]], "n": 3}
    cal = Calibration.from_dict(old)
    assert (cal.band, cal.band_test, cal.prior) == ("learned", {}, [])
    assert cal.median_test == {"n": 3.0} and isinstance(cal.median_test["n"], float)


# --- adaptive recalibration --------------------------------------------------------------------------------


def _regime_change(n: int = 3000, horizon: int = 3, seed: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, 3) a band calibrated for N(0, 1), and targets whose scale doubles half-way."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(n) < n // 2, 1.0, 2.0)[:, None]
    target = scale * rng.normal(0, 1, (n, horizon))
    static = np.broadcast_to(np.array([-Z90, 0.0, Z90]), (n, horizon, 3)).copy()
    return static, target


def _coverage(b: np.ndarray, target: np.ndarray) -> float:
    return float(np.mean((target >= b[..., 0]) & (target <= b[..., 2])))


def test_adaptive_recovers_coverage_after_the_volatility_doubles() -> None:
    static, target = _regime_change()
    out = adaptive(static, target, Q)
    half = len(target) // 2
    first, second = slice(0, half), slice(half, None)
    assert _coverage(static[first], target[first]) == pytest.approx(0.8, abs=0.03)
    static_cov = _coverage(static[second], target[second])
    adaptive_cov = _coverage(out[second], target[second])
    assert static_cov < 0.6  # the static band under-covers once the scale doubles
    assert abs(adaptive_cov - 0.8) < abs(static_cov - 0.8)
    last_quarter = slice(3 * len(target) // 4, None)  # once it has had time to catch up
    assert _coverage(out[last_quarter], target[last_quarter]) == pytest.approx(0.8, abs=0.05)
    assert _coverage(out[first], target[first]) == pytest.approx(0.8, abs=0.05)  # a good band stays good
    np.testing.assert_array_equal(out[..., M], static[..., M])  # the median is left alone


@pytest.mark.parametrize("quantiles", [Q, Q_ASYM], ids=["pair", "singles"])
@pytest.mark.parametrize("k", [0, 7, 1000])
def test_adaptive_uses_past_outcomes_only(k: int, quantiles: list[float]) -> None:
    static, target = _regime_change(n=1200)
    out = adaptive(static, target, quantiles)
    changed = target.copy()
    changed[k:] = np.random.default_rng(k).normal(0, 5, changed[k:].shape)
    out2 = adaptive(static, changed, quantiles)
    np.testing.assert_array_equal(out[: k + 1], out2[: k + 1])
    assert not np.array_equal(out[k + 1 :], out2[k + 1 :])  # the later forecasts do learn from them


def test_adaptive_sees_an_outcome_only_once_its_date_has_come() -> None:
    static, target = _regime_change(n=600)
    i = 400
    origin = np.arange(len(target))[:, None]
    step = np.arange(1, target.shape[1] + 1)[None, :]
    realised_later = origin + step > i  # target[j, h-1] is the close of day j + h
    later = target.copy()
    later[realised_later] = 100.0
    for quantiles in (Q, Q_ASYM):
        base = adaptive(static, target, quantiles)
        np.testing.assert_array_equal(adaptive(static, later, quantiles)[i], base[i])
    # an outcome realised on day i itself is used at origin i. For the pair what counts is whether it fell
    # outside the band (either side widens it alike); for the singles, which side it fell on
    inside, outside, up, down = target.copy(), target.copy(), target.copy(), target.copy()
    inside[i - 1, 0], outside[i - 1, 0], up[i - 1, 0], down[i - 1, 0] = 0.0, 100.0, 100.0, -100.0
    assert not np.array_equal(adaptive(static, inside, Q)[i], adaptive(static, outside, Q)[i])
    np.testing.assert_array_equal(adaptive(static, up, Q)[i], adaptive(static, down, Q)[i])
    assert not np.array_equal(adaptive(static, up, Q_ASYM)[i], adaptive(static, down, Q_ASYM)[i])


@pytest.mark.parametrize(
    ("quantiles", "expect"),
    [
        # pair, a = 0.2: a miss widens each side by gamma * 0.8, a hit narrows it by gamma * 0.2
        (Q, [[-1.0, 0.0, 1.0], [-1.016, 0.0, 1.016], [-1.012, 0.0, 1.012]]),
        # singles: q - 1[y < quantile]; y = 5 is above both (+0.1, +0.8 gamma), y = 0 is above the low one
        # (+0.1 gamma) and below the high one (-0.2 gamma)
        (Q_ASYM, [[-1.0, 0.0, 1.0], [-0.998, 0.0, 1.016], [-0.996, 0.0, 1.012]]),
    ],
    ids=["pair", "singles"],
)
def test_adaptive_by_hand(quantiles: list[float], expect: list[list[float]]) -> None:
    assert ACI_GAMMA == 0.02
    static = np.broadcast_to(np.array([-1.0, 0.0, 1.0]), (3, 1, 3)).copy()
    target = np.array([[5.0], [0.0], [0.0]])  # a miss, then a hit (the last outcome is never used)
    out = adaptive(static, target, quantiles)
    np.testing.assert_allclose(out[:, 0], expect, rtol=0, atol=1e-12)
