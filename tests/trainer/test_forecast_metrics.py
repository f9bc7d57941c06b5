"""Metrics computed by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.forecast_metrics import band_metrics, forecast_metrics, pinball

Q = [0.1, 0.5, 0.9]
LAST = np.array([100.0, 200.0])
ACTUAL = np.array([[110.0, 90.0], [190.0, 220.0]])  # N=2, H=2
MEDIAN = np.array([[105.0, 100.0], [200.0, 210.0]])
MODEL = np.stack([MEDIAN - 10, MEDIAN, MEDIAN + 10], axis=-1)  # (2, 2, 3)


def test_metrics_by_hand() -> None:
    flat = np.repeat(LAST[:, None, None], 2, 1).repeat(3, 2)  # persistence with a zero-width band
    wide = LAST[:, None, None] * np.array([0.8, 1.0, 1.2])[None, None, :] * np.ones((2, 2, 1))
    m = forecast_metrics(MODEL, ACTUAL, LAST, Q, baselines={"flat": flat, "wide": wide})
    assert m["n"] == 2
    # model abs errors: 5, 10, 10, 10 -> 8.75; persistence errors: 10, 10, 10, 20 -> 12.5
    assert m["mae"] == pytest.approx(8.75)
    assert m["naive_mae"] == pytest.approx(12.5)
    assert m["mase"] == pytest.approx(0.7)
    assert m["rmse"] == pytest.approx(np.sqrt((25 + 100 + 100 + 100) / 4))
    assert m["mape"] == pytest.approx((5 / 110 + 10 / 90 + 10 / 190 + 10 / 220) / 4)
    # pinball, (q0.1, q0.5, q0.9) per cell: errors actual - pred
    #   (110 | 95 105 115): 1.5 + 2.5 + 0.5 = 4.5;  (90 | 90 100 110): 0 + 5 + 2 = 7
    #   (190 | 190 200 210): 0 + 5 + 2 = 7;         (220 | 200 210 220): 2 + 5 + 0 = 7   -> 25.5 / 12
    assert m["pinball"] == pytest.approx(25.5 / 12)
    assert m["coverage_80"] == 1.0  # inside [median-10, median+10]: all four
    assert m["width"] == pytest.approx((0.2 + 0.2 + 0.1 + 0.1) / 4)  # 20 / last close
    # h1: truth up (110>100), pred up (105>100) ok; truth down (190<200), pred flat (200 not > 200) ok
    assert m["da_h1"] == 1.0
    assert m["da_h7"] is None
    assert "baseline_pinball" not in m
    assert set(m["baselines"]) == {"flat", "wide"}

    f = m["baselines"]["flat"]
    # errors 10, -10, -10, 20 against every quantile:
    #   q0.1: 1 + 9 + 9 + 2 = 21;  q0.5: 5 + 5 + 5 + 10 = 25;  q0.9: 9 + 1 + 1 + 18 = 29   -> 75 / 12
    assert f["pinball"] == pytest.approx(75 / 12)
    assert f["mae"] == pytest.approx(12.5) and f["mase"] == pytest.approx(1.0)
    assert f["coverage_80"] == 0.0 and f["width"] == 0.0
    assert f["skill"] == pytest.approx(1 - (25.5 / 12) / (75 / 12))  # 0.66
    w = m["baselines"]["wide"]
    # bands [80, 100, 120] and [160, 200, 240]:
    #   (110): 3 + 5 + 1 = 9;  (90): 1 + 5 + 3 = 9;  (190): 3 + 5 + 5 = 13;  (220): 6 + 10 + 2 = 18   -> 49 / 12
    assert w["pinball"] == pytest.approx(49 / 12)
    assert w["coverage_80"] == 1.0
    assert w["width"] == pytest.approx(0.4)
    assert w["skill"] == pytest.approx(1 - 25.5 / 49)
    assert set(w) == {"mae", "mase", "pinball", "coverage_80", "width", "skill"}


def test_skill_is_negative_when_the_baseline_is_better_and_nan_against_a_perfect_one() -> None:
    near = ACTUAL[..., None] + np.array([-1.0, 0.0, 1.0])  # the truth with a +-1 band
    exact = np.repeat(ACTUAL[..., None], 3, 2)
    m = forecast_metrics(MODEL, ACTUAL, LAST, Q, baselines={"near": near, "exact": exact})
    # near: 0.1 + 0 + 0.1 per cell -> 0.2 / 3
    assert m["baselines"]["near"]["pinball"] == pytest.approx(0.2 / 3)
    assert m["baselines"]["near"]["skill"] == pytest.approx(1 - (25.5 / 12) / (0.2 / 3))
    assert m["baselines"]["near"]["skill"] < 0
    assert m["baselines"]["exact"]["pinball"] == 0.0
    assert np.isnan(m["baselines"]["exact"]["skill"])


def test_band_metrics_are_the_models_part_of_forecast_metrics() -> None:
    b = band_metrics(MODEL, ACTUAL, LAST, Q)
    m = forecast_metrics(MODEL, ACTUAL, LAST, Q)
    assert set(b) == {"mae", "mase", "pinball", "coverage_80", "width"}
    assert {k: m[k] for k in b} == b
    assert "baselines" not in m
    # coverage counts the band's edges as inside and anything beyond them as outside
    shifted = MODEL + np.array([0.0, 0.0, -5.0])  # q0.9 at median + 5: 110 on the edge (in), 220 > 215 (out)
    assert band_metrics(shifted, ACTUAL, LAST, Q)["coverage_80"] == pytest.approx(3 / 4)


def test_pinball_penalises_overconfidence() -> None:
    actual = np.random.default_rng(0).normal(0, 1, (2000, 1))
    calibrated = np.broadcast_to(np.array([-1.2816, 0.0, 1.2816]), (2000, 1, 3))
    narrow = calibrated * 0.2
    assert pinball(calibrated, actual, Q) < pinball(narrow, actual, Q)


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="no complete forecast windows"):
        forecast_metrics(np.zeros((0, 7, 3)), np.zeros((0, 7)), np.zeros(0), Q)
    with pytest.raises(ValueError, match="no complete forecast windows"):
        band_metrics(np.zeros((0, 7, 3)), np.zeros((0, 7)), np.zeros(0), Q)
