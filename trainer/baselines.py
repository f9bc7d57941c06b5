"""Volatility-band baselines: the quantile forecasts a probabilistic price forecaster has to beat.

Why persistence medians: daily crypto closes are close to a martingale, so the last close is the point forecast
that is hard to beat; fixing every baseline's median there means the baselines differ *only* in the spread, and a
model's pinball/coverage gain over them is a gain in how it sizes uncertainty, not in a drift guess.

Why these three, from the simplest to the standard quant model:

* ``empirical``: the fit period's h-step log-return quantiles (centred on their median). Unconditional: it knows
  the typical spread and the fat tails but not whether today is calm or wild.
* ``ewma``: RiskMetrics EWMA volatility (lambda 0.94) times normal quantiles times sqrt(h). Conditional, nothing
  fitted, thin (normal) tails.
* ``garch``: GARCH(1,1) with Student-t innovations. Conditional volatility *and* mean reversion of volatility
  over the horizon, with fat tails; the usual benchmark a quant expects.

Why arch for GARCH: its maximum-likelihood fit (starting values, constraints, the Student-t likelihood) is the
reference implementation; reimplementing the optimiser would be a second, untested one. Only the fit uses arch:
the variance path through the evaluated period is the closed-form GARCH(1,1) recursion with the fitted, fixed
parameters, so the forecast made at the close of day t provably sees returns up to day t only. arch and scipy
are imported inside the function, so a training process that imports this module does not pay for them.

Why the t quantiles are rescaled by sqrt((nu-2)/nu): arch's Student-t innovations have unit variance, while
``t.ppf`` is the quantile of a t with variance nu/(nu-2); the rescale makes sigma the return's standard
deviation. The h-step return is a sum of h GARCH returns whose exact law has no closed form; the band uses the
one-day t shape on the summed variance (sum of the 1..h step variance forecasts) as an approximation. Sums
tend towards normal, so for larger h the band is a little too peaked: a unit-variance t has narrower central
quantiles than a normal, and the 80% band under-covers by a few points at h=5 on simulated GARCH-t data.

Everything is computed from the evaluated series itself; anything fitted (empirical quantiles, GARCH parameters)
uses ``close[:fit_end]`` only.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

BASELINES: tuple[str, ...] = ("empirical", "ewma", "garch")
EWMA_LAMBDA = 0.94
MIN_FIT_RETURNS = 100


def ewma_sigma(close: np.ndarray, lam: float = EWMA_LAMBDA, warmup: int = 30) -> np.ndarray:
    """(T,) close -> (T,) daily log-return volatility known at the end of each day t (RiskMetrics EWMA,
    sigma2_t = lam*sigma2_{t-1} + (1-lam)*r_t^2, r_t = log(c_t/c_{t-1})), seeded with the variance of the first
    `warmup` returns; NaN for t < warmup. Uses returns up to and including day t only.

    The seed is the zero-mean variance (mean of r^2), the same convention as the recursion."""
    c = np.asarray(close, dtype=np.float64)
    if warmup < 1:
        raise ValueError(f"ewma_sigma: warmup must be >= 1, got {warmup}")
    out = np.full(c.shape[0], np.nan)
    if c.shape[0] <= warmup:
        return out
    r = np.diff(np.log(c))  # r[j] is the return of day j+1
    s2 = float(np.mean(r[:warmup] ** 2))
    out[warmup] = s2
    for t in range(warmup + 1, c.shape[0]):
        s2 = lam * s2 + (1.0 - lam) * float(r[t - 1]) ** 2
        out[t] = s2
    sigma: np.ndarray = np.sqrt(out)
    return sigma


def _validate(
    close: np.ndarray, origins: np.ndarray, horizon: int, quantiles: list[float], fit_end: int
) -> None:
    if close.ndim != 1 or not np.all(np.isfinite(close)) or not np.all(close > 0):
        raise ValueError("baseline_bands: close must be a 1-D array of positive, finite prices")
    if horizon < 1:
        raise ValueError(f"baseline_bands: horizon must be >= 1, got {horizon}")
    if not quantiles or not all(0.0 < q < 1.0 for q in quantiles):
        raise ValueError(f"baseline_bands: quantiles must lie in (0, 1), got {quantiles}")
    n_fit = fit_end - horizon  # h-step returns inside close[:fit_end] at the longest horizon
    if fit_end > close.shape[0] or n_fit < MIN_FIT_RETURNS:
        raise ValueError(
            f"baseline_bands: too little fitting data: close[:fit_end] (fit_end={fit_end}, series length "
            f"{close.shape[0]}) holds {max(min(fit_end, close.shape[0]) - horizon, 0)} {horizon}-day returns; "
            f"need at least {MIN_FIT_RETURNS} (fit_end >= {MIN_FIT_RETURNS + horizon})"
        )
    lo, hi = fit_end - 1, close.shape[0] - 1
    if origins.ndim != 1 or origins.size == 0 or origins.min() < lo or origins.max() > hi:
        raise ValueError(
            f"baseline_bands: origins must be a non-empty 1-D array inside [fit_end-1, T-1] = [{lo}, {hi}], got "
            f"range [{origins.min() if origins.size else None}, {origins.max() if origins.size else None}]"
        )


def _empirical_spread(close: np.ndarray, horizon: int, q: np.ndarray, fit_end: int) -> np.ndarray:
    """(H, Q) log-return quantiles of the fit period, minus their median."""
    logc = np.log(close[:fit_end])
    out = np.empty((horizon, q.size))
    for h in range(1, horizon + 1):
        lr = logc[h:] - logc[:-h]
        out[h - 1] = np.quantile(lr, q) - np.quantile(lr, 0.5)
    return out


def _garch_variance(
    close: np.ndarray, origins: np.ndarray, horizon: int, fit_end: int
) -> tuple[np.ndarray, float]:
    """(N, H) summed 1..h step variance forecasts (percent^2) made at each origin, and the fitted t's nu."""
    from arch import arch_model

    r = 100.0 * np.diff(np.log(close))  # r[j]: return of day j+1, in percent
    res = arch_model(r[: fit_end - 1], mean="Zero", vol="GARCH", p=1, q=1, dist="t").fit(disp="off")
    omega, alpha, beta, nu = (float(res.params[k]) for k in ("omega", "alpha[1]", "beta[1]", "nu"))
    # s2[d]: conditional variance of day d's return given returns up to day d-1; start at the fit's last day.
    s2 = np.full(close.shape[0] + 1, np.nan)
    s2[fit_end - 1] = float(np.asarray(res.conditional_volatility)[-1]) ** 2
    for d in range(fit_end - 1, close.shape[0]):
        s2[d + 1] = omega + alpha * r[d - 1] ** 2 + beta * s2[d]
    steps = np.empty((origins.size, horizon))
    steps[:, 0] = s2[origins + 1]  # one-step forecast made at the close of day t
    for k in range(1, horizon):
        steps[:, k] = omega + (alpha + beta) * steps[:, k - 1]
    return np.cumsum(steps, axis=1), nu


def baseline_bands(
    close: np.ndarray, origins: np.ndarray, horizon: int, quantiles: list[float], fit_end: int
) -> dict[str, np.ndarray]:
    """close (T,) daily closes; origins (N,) int indices t (the forecast is made at the close of day t for t+1..t+H);
    fit_end: index; empirical quantiles and GARCH parameters are fitted on close[:fit_end] only (every origin is
    >= fit_end - 1). Returns {name: (N, H, Q) price quantiles} for each name in BASELINES."""
    c = np.asarray(close, dtype=np.float64)
    o = np.asarray(origins, dtype=np.int64)
    _validate(c, o, horizon, quantiles, fit_end)
    q = np.asarray(quantiles, dtype=np.float64)
    sqrt_h = np.sqrt(np.arange(1, horizon + 1, dtype=np.float64))

    emp = np.broadcast_to(_empirical_spread(c, horizon, q, fit_end), (o.size, horizon, q.size))
    z = np.array([NormalDist().inv_cdf(float(x)) for x in q])
    ewma = ewma_sigma(c)[o][:, None, None] * sqrt_h[None, :, None] * z[None, None, :]

    from scipy.stats import t as student_t

    var_h, nu = _garch_variance(c, o, horizon, fit_end)
    t_unit = student_t.ppf(q, nu) * np.sqrt((nu - 2.0) / nu)
    garch = np.sqrt(var_h)[:, :, None] / 100.0 * t_unit[None, None, :]

    out: dict[str, np.ndarray] = {}
    for name, spread in zip(BASELINES, (emp, ewma, garch), strict=True):
        s = np.array(spread, dtype=np.float64)
        s[..., q == 0.5] = 0.0  # the median is exactly persistence
        out[name] = c[o][:, None, None] * np.exp(s)
    return out
