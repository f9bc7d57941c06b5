"""The end of a successful run: publish its forecast (forecast.json, ``status.forecast``), then promote it.

Why: a forecaster's product is the next forecast, and until now it existed only inside a checkpoint. Dashboards
and other services read ``forecast.json`` beside the checkpoints (every quantile, full precision, the model and
run that made it), and the operator exports the compact ``status.forecast`` (the 10-90% band and the median, 6
significant digits) as ``trainingrun_forecast_price`` gauges. The forecast is exactly what
``python -m trainer predict --checkpoint <run>`` prints for the run's data (``trainer.evaluate.predict_candles``,
the calibrated shipped model): the next horizon after the run's last candle, i.e. after ``data.end``.

Order (rank 0, after best.pt and the artefacts are flushed): forecast.json is written and flushed, then the
promotion (``trainer.promote``) may point current.json at the run, then ``status.forecast`` and
``status.promotion`` go out with the final metrics.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from trainer.api.spec import TrainingRunSpec
from trainer.api.status import ForecastDay, ForecastStatus, TrainingRunStatus, rfc3339
from trainer.candles import Candles
from trainer.checkpoint import BEST, CheckpointStore
from trainer.dataset import Split
from trainer.evaluate import Forecaster, predict_candles
from trainer.forecast_metrics import band_index
from trainer.status_report import StatusReporter

FORECAST = "forecast.json"


def forecast_document(
    result: dict[str, Any], quantiles: list[float], *, model: str, run: str, generated_at: datetime
) -> dict[str, Any]:
    """forecast.json from ``predict``'s result: the horizon's dates with a price per quantile (``q0.1``...)."""
    keys = [f"q{q:g}" for q in quantiles]
    return {
        "symbol": result["symbol"],
        "origin": result["last_date"],
        "originClose": result["last_close"],
        "generatedAt": rfc3339(generated_at),
        "horizon": len(result["forecast"]),
        "quantiles": quantiles,
        "days": [{"date": row["date"], **{k: row[k] for k in keys}} for row in result["forecast"]],
        "model": model,
        "run": run,
    }


def forecast_status(doc: dict[str, Any], uri: str) -> ForecastStatus:
    """The compact ``status.forecast``: the band's quantiles and the median (q0.1, q0.5, q0.9 by default)."""
    quantiles: list[float] = doc["quantiles"]
    lo, hi = band_index(quantiles)
    shown = [quantiles[lo], 0.5, quantiles[hi]]
    return ForecastStatus(
        symbol=doc["symbol"],
        origin=doc["origin"],
        origin_close=doc["originClose"],
        generated_at=doc["generatedAt"],
        uri=uri,
        quantiles=shown,
        days=[ForecastDay(date=d["date"], values=[d[f"q{q:g}"] for q in shown]) for d in doc["days"]],
    )


def publish(
    spec: TrainingRunSpec,
    name: str,
    store: CheckpointStore,
    reporter: StatusReporter,
    forecaster: Forecaster,
    candles: Candles,
    split: Split,
    metrics: dict[str, Any],
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write forecast.json (flushed), promote when ``spec.promotion`` asks, report both in the status; returns
    what the summary adds (``forecast``, and ``promotion`` when asked). Storage errors of forecast.json raise
    as any artefact's; a promotion's are reported, never raised (``trainer.promote``)."""
    from trainer.promote import promote

    when = now or datetime.now(timezone.utc)
    result = predict_candles(forecaster, candles)
    doc = forecast_document(result, forecaster.quantiles, model=store.uri(BEST), run=name, generated_at=when)
    uri = store.write_json(FORECAST, doc)
    store.flush(timeout=spec.checkpoint.upload_deadline_seconds)
    forecast = forecast_status(doc, uri)
    out: dict[str, Any] = {"forecast": forecast.dump()}
    update = TrainingRunStatus(forecast=forecast)
    if spec.promotion is not None:
        update.promotion = promote(spec, name, store, split, candles.frame, metrics, now=when)
        out["promotion"] = update.promotion.dump()
    reporter.report(update, flush=False)  # sent with the final metrics
    return out
