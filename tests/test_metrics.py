"""Metrics computed by hand on tiny arrays."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.metrics import forecast_metrics, pinball

Q = [0.1, 0.5, 0.9]


def test_metrics_by_hand() -> None:
    last = np.array([100.0, 200.0])
    actual = np.array([[110.0, 90.0], [190.0, 220.0]])  # N=2, H=2
    median = np.array([[105.0, 100.0], [200.0, 210.0]])
    pred = np.stack([median - 10, median, median + 10], axis=-1)
    m = forecast_metrics(pred, actual, last, Q, band=np.zeros((2, 3)))
    # model abs errors: 5, 10, 10, 10 -> 8.75; persistence errors: 10, 10, 10, 20 -> 12.5
    assert m["mae"] == pytest.approx(8.75)
    assert m["naive_mae"] == pytest.approx(12.5)
    assert m["mase"] == pytest.approx(0.7)
    assert m["rmse"] == pytest.approx(np.sqrt((25 + 100 + 100 + 100) / 4))
    # inside [median-10, median+10]: all four
    assert m["coverage_80"] == 1.0
    # h1: truth up (110>100), pred up (105>100) ok; truth down (190<200), pred flat (200 not > 200) ok
    assert m["da_h1"] == 1.0
    assert m["da_h7"] is None
    # the zero band is persistence for every quantile: pinball = mean over q of pinball(0 error scale)
    assert m["baseline_pinball"] == pytest.approx(
        pinball(np.repeat(last[:, None, None], 3, 2).repeat(2, 1), actual, Q)
    )


def test_pinball_penalises_overconfidence() -> None:
    actual = np.random.default_rng(0).normal(0, 1, (2000, 1))
    calibrated = np.broadcast_to(np.array([-1.2816, 0.0, 1.2816]), (2000, 1, 3))
    narrow = calibrated * 0.2
    assert pinball(calibrated, actual, Q) < pinball(narrow, actual, Q)


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="no complete forecast windows"):
        forecast_metrics(np.zeros((0, 7, 3)), np.zeros((0, 7)), np.zeros(0), Q)
