"""The volatility-band baselines: persistence medians, no look-ahead, calibrated on GARCH data, sane on BTC."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.baselines import BASELINES, baseline_bands, ewma_sigma
from trainer.forecast_metrics import pinball

REPO = Path(__file__).resolve().parents[2]
QUANTILES = [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]
FIT_END = 1500
HORIZON = 5


def simulate_garch_t(
    n: int = 3000,
    seed: int = 1,
    omega: float = 0.05,
    alpha: float = 0.10,
    beta: float = 0.88,
    nu: float = 5.0,
) -> tuple[np.ndarray, np.ndarray]:
    """GARCH(1,1) with unit-variance t innovations, returns in percent. -> (close (n+1,), sigma (n,)) where
    sigma[t] is the true daily log-return volatility of day t+1, known at the close of day t."""
    rng = np.random.default_rng(seed)
    z = rng.standard_t(nu, n) * np.sqrt((nu - 2.0) / nu)
    s2, r = np.empty(n), np.empty(n)
    s2[0] = omega / (1.0 - alpha - beta)
    for i in range(n):
        if i:
            s2[i] = omega + alpha * r[i - 1] ** 2 + beta * s2[i - 1]
        r[i] = np.sqrt(s2[i]) * z[i]
    close = 100.0 * np.exp(np.concatenate([[0.0], np.cumsum(r / 100.0)]))
    return close, np.sqrt(s2) / 100.0


@pytest.fixture(scope="module")
def sim() -> tuple[np.ndarray, np.ndarray]:
    return simulate_garch_t()


@pytest.fixture(scope="module")
def sim_bands(sim: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    close = sim[0]
    origins = np.arange(FIT_END - 1, close.size)
    return origins, baseline_bands(close, origins, HORIZON, QUANTILES, FIT_END)


def realised(close: np.ndarray, origins: np.ndarray, horizon: int) -> np.ndarray:
    return close[origins[:, None] + np.arange(1, horizon + 1)]


def coverage_80(band: np.ndarray, actual: np.ndarray, quantiles: list[float]) -> float:
    lo, hi = quantiles.index(0.1), quantiles.index(0.9)
    return float(np.mean((actual >= band[..., lo]) & (actual <= band[..., hi])))


def test_shapes_persistence_median_and_monotone_quantiles(sim, sim_bands) -> None:
    close = sim[0]
    origins, bands = sim_bands
    assert tuple(bands) == BASELINES
    mid = QUANTILES.index(0.5)
    for name, band in bands.items():
        assert band.shape == (origins.size, HORIZON, len(QUANTILES)), name
        assert band.dtype == np.float64 and np.all(np.isfinite(band)), name
        assert np.array_equal(band[..., mid], np.broadcast_to(close[origins][:, None], band.shape[:2])), name
        assert np.all(np.diff(band, axis=-1) > 0), name
        # spreads widen with the horizon
        assert np.all(band[:, -1, -1] - band[:, -1, 0] > band[:, 0, -1] - band[:, 0, 0]), name


@pytest.mark.parametrize("cut", [FIT_END - 1, FIT_END + 300, 2900])
def test_no_look_ahead_after_origin(sim, sim_bands, cut: int) -> None:
    close = sim[0]
    origins, bands = sim_bands
    perturbed = close.copy()
    perturbed[cut + 1 :] *= 3.0
    after = baseline_bands(perturbed, origins, HORIZON, QUANTILES, FIT_END)
    seen = origins <= cut
    for name in BASELINES:
        assert np.array_equal(after[name][seen], bands[name][seen]), name
    np.testing.assert_array_equal(ewma_sigma(perturbed)[: cut + 1], ewma_sigma(close)[: cut + 1])
    # the perturbation is visible at the first later origin, so the comparison above can fail
    nxt = np.searchsorted(origins, cut + 1)
    for name in ("ewma", "garch"):
        spread = after[name][nxt] / perturbed[cut + 1] - bands[name][nxt] / close[cut + 1]
        assert np.abs(spread).max() > 1e-3, name


def test_fitted_parts_use_only_data_before_fit_end(sim, sim_bands) -> None:
    close = sim[0]
    origins, bands = sim_bands
    rng = np.random.default_rng(7)
    perturbed = close.copy()
    perturbed[FIT_END:] *= np.exp(np.cumsum(rng.normal(0.0, 0.05, close.size - FIT_END)))
    after = baseline_bands(perturbed, origins, HORIZON, QUANTILES, FIT_END)
    # empirical: the relative spread is fitted once, before fit_end
    np.testing.assert_allclose(
        after["empirical"] / perturbed[origins, None, None],
        bands["empirical"] / close[origins, None, None],
        rtol=1e-13,
    )
    # garch: parameters and the state at fit_end-1 are the same as fitting on the truncated series
    for series in (perturbed, close[:FIT_END]):
        first = baseline_bands(series, np.array([FIT_END - 1]), HORIZON, QUANTILES, FIT_END)
        for name in BASELINES:
            assert np.array_equal(first[name][0], bands[name][0]), name
    # and fit_end really selects the fitting data
    later = baseline_bands(close, origins[-10:], HORIZON, QUANTILES, FIT_END + 1000)
    assert not np.allclose(later["empirical"], bands["empirical"][-10:])
    assert not np.allclose(later["garch"], bands["garch"][-10:])


def test_garch_band_matches_arch_forecast(sim, sim_bands) -> None:
    """The closed-form variance path equals arch's own forecasts with the parameters fixed."""
    from arch import arch_model
    from scipy.stats import t as student_t

    close = sim[0]
    origins, bands = sim_bands
    r = 100.0 * np.diff(np.log(close))
    res = arch_model(r[: FIT_END - 1], mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    fixed = arch_model(r, mean="Zero", vol="GARCH", p=1, q=1, dist="t").fix(res.params.to_numpy())
    var = fixed.forecast(horizon=HORIZON, start=FIT_END - 2, reindex=False).variance.to_numpy()
    nu = float(res.params["nu"])
    unit_t = student_t.ppf(QUANTILES, nu) * np.sqrt((nu - 2.0) / nu)
    log_q = np.sqrt(np.cumsum(var, axis=1))[:, :, None] / 100.0 * unit_t
    expected = close[origins[: var.shape[0]], None, None] * np.exp(log_q)
    np.testing.assert_allclose(bands["garch"][: var.shape[0]], expected, rtol=1e-10)


def test_garch_calibrated_on_simulated_garch(sim, sim_bands) -> None:
    close = sim[0]
    origins, bands = sim_bands
    keep = origins + HORIZON < close.size
    o = origins[keep]
    actual = realised(close, o, HORIZON)
    garch, empirical = bands["garch"][keep], bands["empirical"][keep]
    for h in (1, 5):
        cov = coverage_80(garch[:, h - 1], actual[:, h - 1], QUANTILES)
        assert abs(cov - 0.80) < 0.05, (h, cov)
    scale = close[o]
    pin_garch = pinball(garch / scale[:, None, None], actual / scale[:, None], QUANTILES)
    pin_emp = pinball(empirical / scale[:, None, None], actual / scale[:, None], QUANTILES)
    assert pin_garch < pin_emp


def test_ewma_sigma_tracks_true_sigma(sim) -> None:
    close, sigma = sim
    est = ewma_sigma(close)
    assert np.corrcoef(est[100 : sigma.size], sigma[100:])[0, 1] > 0.8


def test_ewma_sigma_definition() -> None:
    close = 100.0 * np.exp(np.cumsum(np.random.default_rng(3).normal(0.0, 0.02, 60)))
    r = np.diff(np.log(close))
    est = ewma_sigma(close, lam=0.9, warmup=10)
    assert est.shape == close.shape
    assert np.all(np.isnan(est[:10])) and np.all(np.isfinite(est[10:]))
    seed = np.mean(r[:10] ** 2)
    assert est[10] == pytest.approx(np.sqrt(seed))
    assert est[11] == pytest.approx(np.sqrt(0.9 * seed + 0.1 * r[10] ** 2))
    np.testing.assert_array_equal(ewma_sigma(close[:30], lam=0.9, warmup=10), est[:30])


def test_real_btc_coverage_2024() -> None:
    df = pd.read_csv(REPO / "trainer" / "datasets" / "BTC-USD.csv", parse_dates=["date"])
    close = df["close"].to_numpy(dtype=np.float64)
    fit_end = int(np.searchsorted(df["date"].to_numpy(), np.datetime64("2024-01-01")))
    horizon = 7
    origins = np.flatnonzero((df["date"].dt.year == 2024).to_numpy())
    origins = origins[origins + horizon < close.size]
    assert origins.size > 300
    bands = baseline_bands(close, origins, horizon, QUANTILES, fit_end)
    actual = realised(close, origins, horizon)
    for name, band in bands.items():
        assert 0.6 <= coverage_80(band, actual, QUANTILES) <= 0.95, name


def test_import_does_not_load_arch_or_scipy() -> None:
    code = "import sys, trainer.baselines; print(sorted(m for m in ('arch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_errors_for_too_little_fitting_data_and_bad_origins(sim) -> None:
    close = sim[0]
    with pytest.raises(ValueError, match=r"too little fitting data.*need at least 100 .*fit_end >= 105"):
        baseline_bands(close, np.array([80]), HORIZON, QUANTILES, 81)
    with pytest.raises(ValueError, match="too little fitting data"):
        baseline_bands(close[:90], np.array([89]), 1, QUANTILES, 90)
    with pytest.raises(ValueError, match=r"origins .*\[1499, 3000\]"):
        baseline_bands(close, np.array([FIT_END - 2]), HORIZON, QUANTILES, FIT_END)
    with pytest.raises(ValueError, match="origins"):
        baseline_bands(close, np.array([close.size]), HORIZON, QUANTILES, FIT_END)
