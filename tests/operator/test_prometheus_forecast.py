"""trainingrun_forecast_price from status.forecast: one series per quantile and day ahead, replaced by the next
forecast, dropped when the forecast or the run goes (the real Prometheus scrape is test_prometheus_e2e.py)."""

from __future__ import annotations

import re

from prometheus_client import generate_latest
from trainop import prometheus


def _body(forecast: dict[str, object] | None, name: str = "fc1") -> dict[str, object]:
    status: dict[str, object] = {"phase": "Succeeded"}
    if forecast is not None:
        status["forecast"] = forecast
    return {"metadata": {"namespace": "mx", "name": name}, "spec": {"symbol": "SOL"}, "status": status}


def _forecast(symbol: str, *days: list[float | None]) -> dict[str, object]:
    return {
        "symbol": symbol,
        "origin": "2025-06-30",
        "originClose": 154.74,
        "generatedAt": "2026-01-01T00:00:00Z",
        "uri": "s3://b/mx/fc1/forecast.json",
        "quantiles": [0.1, 0.5, 0.9],
        "days": [{"date": f"2025-07-0{i + 1}", "values": v} for i, v in enumerate(days)],
    }


def _prices(name: str = "fc1") -> dict[tuple[str, str, str], float]:
    """(symbol, quantile, horizon) -> value of the run's forecast series in a scrape."""
    text = generate_latest(prometheus.REGISTRY).decode()
    pattern = (
        r'^trainingrun_forecast_price\{horizon="(\d+)",name="'
        + name
        + r'",namespace="mx",quantile="([0-9.]+)",'
        r'symbol="(\w+)"\} (\S+)$'
    )
    return {(s, q, h): float(v) for h, q, s, v in re.findall(pattern, text, flags=re.M)}


def test_forecast_gauges_follow_status_forecast_and_go_with_the_run() -> None:
    prometheus.observe_run(
        _body(_forecast("SOL", [147.667, 154.74, 162.152], [144.284, 154.74, 165.953])), "SOL"
    )
    assert _prices() == {
        ("SOL", "0.1", "1"): 147.667,
        ("SOL", "0.5", "1"): 154.74,
        ("SOL", "0.9", "1"): 162.152,
        ("SOL", "0.1", "2"): 144.284,
        ("SOL", "0.5", "2"): 154.74,
        ("SOL", "0.9", "2"): 165.953,
    }
    # A newer forecast (another symbol, one day, a null price) replaces every series of the old one.
    prometheus.observe_run(_body(_forecast("BTC", [100000.0, None, 110000.0])), "BTC")
    assert _prices() == {("BTC", "0.1", "1"): 100000.0, ("BTC", "0.9", "1"): 110000.0}
    prometheus.observe_run(_body(None), "BTC")  # the forecast left the status
    assert _prices() == {}
    prometheus.observe_run(_body(_forecast("SOL", [1.0, 2.0, 3.0])), "SOL")
    prometheus.observe_run(_body(_forecast("SOL", [4.0, 5.0, 6.0]), name="fc2"), "SOL")
    prometheus.forget_run("mx", "fc1")
    assert _prices() == {} and len(_prices("fc2")) == 3  # only the deleted run's series go
    prometheus.forget_run("mx", "fc2")
    assert _prices("fc2") == {}
