"""Fold statistics: pooling the sums of uneven folds gives exactly the metrics of the concatenated forecasts, the
JSON a pod writes fits a termination message, and mismatched folds or specs are refused with the field named."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from trainer.api.foldstats import MAX_MESSAGE_BYTES, FoldStats, pooled
from trainer.api.manifest import SpecError, parse_spec
from trainer.fold_sums import fold_stats
from trainer.forecast_metrics import forecast_metrics

BASELINES = ("empirical", "ewma", "garch")


def forecasts(
    n: int, horizon: int, quantiles: list[float], seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Random but plausible price forecasts: (prices, actual, last_close, baseline bands)."""
    rng = np.random.default_rng(seed)
    last = 100.0 * np.exp(rng.normal(0, 0.5, n))
    actual = last[:, None] * np.exp(np.cumsum(rng.normal(0, 0.03, (n, horizon)), axis=1))
    z = np.asarray(quantiles) - 0.5

    def band(noise: float, spread: float) -> np.ndarray:
        centre = actual * np.exp(rng.normal(0, noise, (n, horizon)))
        return centre[..., None] * np.exp(spread * z)  # increasing in the quantile

    bands = {name: band(0.05, 0.1 + 0.2 * i) for i, name in enumerate(BASELINES)}
    return band(0.02, 0.08), actual, last, bands


def assert_same(got: Any, want: Any, path: str = "") -> None:
    """Equal structure and keys; floats within rel 1e-12; None and ints exactly."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for k in want:
            assert_same(got[k], want[k], f"{path}.{k}")
    elif want is None or isinstance(want, int):
        assert got == want and type(got) is type(want), path
    else:
        assert math.isclose(got, want, rel_tol=1e-12), f"{path}: {got} != {want}"


@pytest.mark.parametrize(
    ("horizon", "quantiles"),
    [
        (7, [0.1, 0.5, 0.9]),
        (10, [0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95]),
        (3, [0.1, 0.5, 0.9]),
        (1, [0.2, 0.5]),
    ],
)
def test_pooled_uneven_folds_equal_the_metrics_of_the_concatenation(
    horizon: int, quantiles: list[float]
) -> None:
    prices, actual, last, bands = forecasts(40, horizon, quantiles)
    cuts = [(0, 3), (3, 26), (26, 40)]  # 3, 23 and 14 windows
    folds = [
        fold_stats(
            prices[a:b], actual[a:b], last[a:b], quantiles, {k: v[a:b] for k, v in bands.items()},
            index=i, start="2025-01-01", end="2025-01-02",
        )
        for i, (a, b) in enumerate(cuts)
    ]  # fmt: skip
    # ... as the operator reads them: from the termination message's JSON
    read = [FoldStats.model_validate_json(f.message()) for f in folds]
    got = pooled(read)
    want = forecast_metrics(prices, actual, last, quantiles, baselines=bands)
    assert_same(got, want)
    assert got["n"] == 40 and isinstance(got["n"], int)
    assert (got["da_h7"] is None) == (horizon < 7) and got["da_h1"] is not None
    assert all(math.isfinite(b["skill"]) and b["skill"] != 0 for b in got["baselines"].values())
    # ... and the comparison can fail: leaving out one fold changes the pooled metrics
    with pytest.raises(AssertionError):
        assert_same(pooled(read[1:]), want)


def test_fold_stats_are_plain_json_numbers() -> None:
    prices, actual, last, bands = forecasts(5, 7, [0.1, 0.5, 0.9])
    s = fold_stats(
        prices, actual, last, [0.1, 0.5, 0.9], bands, index=2, start="2025-03-01", end="2025-03-05"
    )
    assert type(s.sq_err) is float and type(s.model.covered) is int and type(s.da_hits["7"]) is int
    assert s.da_hits.keys() == {"1", "7"} and s.n == 5 and s.horizon == 7 and s.index == 2
    assert 0 <= s.model.covered <= 5 * 7 and len(s.model.pinball) == 3


def test_the_largest_spec_fits_a_termination_message_and_the_limit_is_checked() -> None:
    q = [0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95]  # spec.model.quantiles: at most 9
    prices, actual, last, bands = forecasts(365, 60, q)  # a year of origins, the longest horizon
    big = {k: v * 1e6 for k, v in bands.items()}
    s = fold_stats(
        prices * 1e6, actual * 1e6, last * 1e6, q, big, index=999, start="2025-01-01", end="2025-12-31",
        median="persistence", band="learned", epochs=1000, train_seconds=123456.78,
    )  # fmt: skip
    assert len(s.message().encode()) < MAX_MESSAGE_BYTES // 2
    many = s.model_copy(update={"baselines": {f"b{i}": s.model for i in range(40)}})
    with pytest.raises(ValueError, match="over 4096"):
        many.message()


def test_folds_that_cannot_be_pooled_are_refused() -> None:
    q = [0.1, 0.5, 0.9]
    prices, actual, last, bands = forecasts(4, 7, q)
    a = fold_stats(prices, actual, last, q, bands, index=0, start="2025-01-01", end="2025-01-04")
    prices, actual, last, bands = forecasts(4, 3, q)
    short = fold_stats(prices, actual, last, q, bands, index=1, start="2025-01-05", end="2025-01-08")
    with pytest.raises(ValueError, match="horizons"):
        pooled([a, short])
    fewer = a.model_copy(update={"index": 1, "baselines": {"ewma": a.baselines["ewma"]}})
    with pytest.raises(ValueError, match="baselines"):
        pooled([a, fewer])
    with pytest.raises(ValueError, match="no fold"):
        pooled([a.model_copy(update={"n": 0})])
    with pytest.raises(ValueError, match="2 pinball sums for 3 quantiles"):
        FoldStats.model_validate({**a.model_dump(), "model": {**a.model.model_dump(), "pinball": [1.0, 2.0]}})


def _spec(walk_forward: dict[str, str], **data: str) -> None:
    parse_spec({"symbol": "SOL", "data": data, "walkForward": walk_forward})


@pytest.mark.parametrize(
    ("walk_forward", "data", "field"),
    [
        (
            {"start": "2025-02-30", "end": "2025-06-30"},
            {},
            "spec.walkForward.start: '2025-02-30' is not a calendar",
        ),
        (
            {"start": "2025-02-01", "end": "2025-06-31"},
            {},
            "spec.walkForward.end: '2025-06-31' is not a calendar",
        ),
        (
            {"start": "2025-02-01", "end": "2025-06-30"},
            {"end": "2025-05-01"},
            "walkForward.end: 2025-06-30 is after",
        ),
        (
            {"start": "2025-02-01", "end": "2025-06-30"},
            {"start": "2025-02-01"},
            "walkForward.start: 2025-02-01 is not",
        ),
    ],
)
def test_a_walk_forward_the_data_cannot_serve_is_refused_naming_the_field(
    walk_forward: dict[str, str], data: dict[str, str], field: str
) -> None:
    with pytest.raises(SpecError) as err:
        _spec(walk_forward, **data)
    assert field in str(err.value)
    _spec(
        {"start": "2025-02-01", "end": "2025-06-30"}, start="2025-01-31", end="2025-06-30"
    )  # the edge is fine
