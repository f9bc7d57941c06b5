"""The post-hoc decisions: the Diebold-Mariano test, which median is shipped, the conformal shifts of the band,
applying and storing them, and the online (adaptive) recalibration that uses past outcomes only."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from statistics import NormalDist

import numpy as np
import pytest

from trainer.calibrate import (
    SIGNIFICANCE,
    Calibration,
    adaptive,
    conformal_shifts,
    decide_median,
    diebold_mariano,
    fit_calibration,
)
from trainer.candles import load_candles
from trainer.dataset import Split, Windows, make_windows, split_windows

Q = [0.1, 0.5, 0.9]
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
    ("mean", "std"),
    [(0.0, (1.0, 1.0, 1.0)), (0.0, (1.0, 2.0, 0.5)), (0.3, (1.0, 1.0, 1.0))],
    ids=["standard-normal", "a-scale-per-step", "biased"],
)
def test_conformal_shifts_fix_the_coverage_of_a_mis_scaled_band(mean: float, std: tuple[float, ...]) -> None:
    rng = np.random.default_rng(4)
    s = np.asarray(std)
    narrow = np.broadcast_to(np.array([-0.5, 0.0, 0.5]), (1, len(std), 3))  # should be -+1.2816 (x std)
    calib = mean + s * rng.normal(0, 1, (2000, len(std)))
    fresh = mean + s * rng.normal(0, 1, (50_000, len(std)))
    shifts = conformal_shifts(np.broadcast_to(narrow, (2000, len(std), 3)), calib, Q)
    assert shifts.shape == (len(std), 3)
    assert np.all(shifts[:, M] == 0.0)  # the median is not moved
    lo, hi = narrow[0, :, 0] + shifts[:, 0], narrow[0, :, 2] + shifts[:, 2]
    raw_cov = np.mean((fresh >= narrow[0, :, 0]) & (fresh <= narrow[0, :, 2]), axis=0)
    assert np.all(np.abs(raw_cov - 0.8) > 0.1)  # the band really was mis-scaled
    cov = np.mean((fresh >= lo) & (fresh <= hi), axis=0)  # per horizon step, on draws never seen
    np.testing.assert_allclose(cov, 0.8, atol=0.03)
    np.testing.assert_allclose(np.mean(fresh < lo, axis=0), 0.1, atol=0.02)
    np.testing.assert_allclose(np.mean(fresh > hi, axis=0), 0.1, atol=0.02)


def test_conformal_shifts_are_the_documented_order_statistics_lower() -> None:
    n = 100
    resid = np.arange(n, dtype=np.float64)[:, None]  # residuals 0..99 (the band at zero)
    shifts = conformal_shifts(np.zeros((n, 1, 3)), resid, Q)
    assert shifts[0, 0] == resid[math.floor((n + 1) * 0.1) - 1, 0]  # the 10th smallest: 9


def test_conformal_shifts_are_the_documented_order_statistics_upper() -> None:
    n = 100
    resid = np.arange(n, dtype=np.float64)[:, None]
    shifts = conformal_shifts(np.zeros((n, 1, 3)), resid, Q)
    assert shifts[0, 2] == resid[math.ceil((n + 1) * 0.9) - 1, 0]  # the 91st smallest: 90


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


@pytest.mark.parametrize(
    ("val_median", "choice"), [("persistence-plus-noise", "persistence"), ("oracle", "learned")]
)
def test_fit_calibration_decides_on_val_and_shifts_the_shipped_band_on_calib(
    val_median: str, choice: str
) -> None:
    split = sol_btc_split()
    val_scaled = band(_median(val_median, split.val), 0.5)
    calib_scaled = band(_median("persistence-plus-noise", split.calib), 0.5)  # a narrow, off-centre band
    cal = fit_calibration(val_scaled, split.val, calib_scaled, split.calib, Q)
    assert cal.median == choice
    assert cal.n == len(split.calib) > len(split.val)
    shifts = np.asarray(cal.shifts)
    assert shifts.shape == (H, 3) and np.all(shifts[:, M] == 0.0)
    # the shifts are fitted on the band as it is shipped: re-centred on persistence when persistence is chosen
    centred = calib_scaled
    if choice == "persistence":
        centred = calib_scaled + (persistence64(split.calib) - calib_scaled[..., M])[..., None]
    np.testing.assert_allclose(shifts, conformal_shifts(centred, split.calib.target.numpy(), Q), atol=1e-5)
    shipped = cal.apply(calib_scaled, split.calib, M)
    t = split.calib.target.numpy()
    coverage = float(np.mean((t >= shipped[..., 0]) & (t <= shipped[..., 2])))
    assert 0.79 <= coverage <= 0.83  # in-sample, with the finite-sample correction


def test_calibration_round_trips_through_json() -> None:
    split = sol_btc_split()
    cal = fit_calibration(
        band(_median("persistence-plus-noise", split.val)),
        split.val,
        band(_median("persistence-plus-noise", split.calib)),
        split.calib,
        Q,
    )
    text = json.dumps(cal.to_dict())
    back = Calibration.from_dict(json.loads(text))
    assert back == cal
    assert set(back.median_test) == {"statistic", "p_value", "learned_mase", "n"}
    raw = _raw(split.val)
    np.testing.assert_array_equal(back.apply(raw, split.val, M), cal.apply(raw, split.val, M))
    other = Calibration.from_dict({**json.loads(text), "median": "learned"})
    assert not np.array_equal(other.apply(raw, split.val, M), cal.apply(raw, split.val, M))


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


@pytest.mark.parametrize("k", [0, 7, 1000])
def test_adaptive_uses_past_outcomes_only(k: int) -> None:
    static, target = _regime_change(n=1200)
    out = adaptive(static, target, Q)
    changed = target.copy()
    changed[k:] = np.random.default_rng(k).normal(0, 5, changed[k:].shape)
    out2 = adaptive(static, changed, Q)
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
    base = adaptive(static, target, Q)
    np.testing.assert_array_equal(adaptive(static, later, Q)[i], base[i])
    # an outcome realised on day i itself is used at origin i: pushing it above or below every quantile
    up, down = target.copy(), target.copy()
    up[i - 1, 0], down[i - 1, 0] = 100.0, -100.0
    assert not np.array_equal(adaptive(static, up, Q)[i], adaptive(static, down, Q)[i])
