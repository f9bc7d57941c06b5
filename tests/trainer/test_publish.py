"""forecast.json and the compact status.forecast built from predict's result (pure; the run itself is tested
in test_cli.py and test_promote_s3.py)."""

from __future__ import annotations

from datetime import datetime, timezone

from trainer.publish import forecast_document, forecast_status

QUANTILES = [0.05, 0.1, 0.5, 0.9, 0.95]
RESULT = {
    "symbol": "SOL",
    "last_date": "2025-06-30",
    "last_close": 154.74123456,
    "forecast": [
        {
            "date": "2025-07-01",
            "q0.05": 140.0,
            "q0.1": 147.666806,
            "q0.5": 154.7412349,
            "q0.9": 162.1519,
            "q0.95": 170.0,
        },
        {
            "date": "2025-07-02",
            "q0.05": 139.0,
            "q0.1": 144.284354,
            "q0.5": 154.7412349,
            "q0.9": 165.9533,
            "q0.95": 171.0,
        },
    ],
}


def test_forecast_document_has_every_quantile_and_its_provenance() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    doc = forecast_document(RESULT, QUANTILES, model="s3://b/r/best.pt", run="r", generated_at=when)
    assert doc == {
        "symbol": "SOL",
        "origin": "2025-06-30",
        "originClose": 154.74123456,
        "generatedAt": "2026-01-02T03:04:05Z",
        "horizon": 2,
        "quantiles": QUANTILES,
        "days": RESULT["forecast"],
        "model": "s3://b/r/best.pt",
        "run": "r",
    }


def test_status_forecast_is_the_band_and_median_to_six_digits() -> None:
    when = datetime(2026, 1, 2, tzinfo=timezone.utc)
    doc = forecast_document(RESULT, QUANTILES, model="m", run="r", generated_at=when)
    status = forecast_status(doc, "s3://b/r/forecast.json").dump()
    assert status == {
        "symbol": "SOL",
        "origin": "2025-06-30",
        "originClose": 154.741,
        "generatedAt": "2026-01-02T00:00:00Z",
        "uri": "s3://b/r/forecast.json",
        "quantiles": [0.1, 0.5, 0.9],
        "days": [
            {"date": "2025-07-01", "values": [147.667, 154.741, 162.152]},
            {"date": "2025-07-02", "values": [144.284, 154.741, 165.953]},
        ],
    }
