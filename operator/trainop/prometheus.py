"""Prometheus metrics of TrainingRuns and of the operator, served with ``/healthz`` on one port.

Why these names are fixed: the alert rules (``TrainingRunFailed`` on ``trainingrun_failed_info``, stalls on
``trainingrun_stalled``...), the Helm chart's ServiceMonitor and its Grafana dashboard
(``charts/crypto-price-predictor/dashboards/trainingruns.json``, whose every query a test evaluates against a real
Prometheus) are written against exactly them.

Per-run gauges are recomputed from each TrainingRun body the operator sees (so they are right again after an
operator restart) and their series are removed when the run is deleted (or no longer in its status: a new
forecast's days replace the old ones); the counters count transitions this operator process observed. The
forecast gauges carry the forecast's own symbol (``status.forecast.symbol``), one series per quantile of
``status.forecast`` (the band and the median) and day ahead."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any, Literal, get_args

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from trainer.api.status import PHASES, ForecastStatus, Progress, TrainingRunStatus

from .conditions import PENDING, PENDING_METRIC_REASONS, STALLED, is_true, parse_time

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

RUN_LABELS = ("namespace", "name", "symbol")
PHASE = Gauge(
    "trainingrun_phase",
    "1 for the run's current phase, 0 for the others.",
    [*RUN_LABELS, "phase"],
    registry=REGISTRY,
)
FAILED_INFO = Gauge(
    "trainingrun_failed_info",
    "1 while the run is Failed, labelled with the reason.",
    [*RUN_LABELS, "reason"],
    registry=REGISTRY,
)
FAILURES = Counter(
    "trainingrun_failures_total",
    "Runs that became Failed, by reason.",
    ["namespace", "symbol", "reason"],
    registry=REGISTRY,
)
SUCCEEDED = Counter(
    "trainingrun_succeeded_total", "Runs that became Succeeded.", ["namespace", "symbol"], registry=REGISTRY
)
EPOCH = Gauge("trainingrun_epoch", "Last epoch reported by the trainer.", RUN_LABELS, registry=REGISTRY)
TOTAL_EPOCHS = Gauge(
    "trainingrun_total_epochs",
    "Epochs the run trains for (progress.totalEpochs).",
    RUN_LABELS,
    registry=REGISTRY,
)
TRAIN_LOSS = Gauge("trainingrun_train_loss", "Last training loss.", RUN_LABELS, registry=REGISTRY)
VAL_LOSS = Gauge("trainingrun_val_loss", "Last validation loss.", RUN_LABELS, registry=REGISTRY)
BEST_VAL_LOSS = Gauge(
    "trainingrun_best_val_loss", "Best validation loss so far.", RUN_LABELS, registry=REGISTRY
)
LAST_PROGRESS = Gauge(
    "trainingrun_last_progress_timestamp_seconds",
    "Unix time of the last progress report.",
    RUN_LABELS,
    registry=REGISTRY,
)
SAMPLES_PER_SECOND = Gauge(
    "trainingrun_samples_per_second",
    "Training throughput of the last epoch reported.",
    RUN_LABELS,
    registry=REGISTRY,
)
RESTARTS = Gauge(
    "trainingrun_restarts",
    "Restarts of the run's training so far (status.restarts: retried attempts and container restarts).",
    RUN_LABELS,
    registry=REGISTRY,
)
STALLED_GAUGE = Gauge(
    "trainingrun_stalled",
    "1 while the run is Stalled (no progress for stallTimeout).",
    RUN_LABELS,
    registry=REGISTRY,
)
PENDING_INFO = Gauge(
    "trainingrun_pending_reason_info",
    "1 while the run is Pending for this reason.",
    [*RUN_LABELS, "reason"],
    registry=REGISTRY,
)
FORECAST_PRICE = Gauge(
    "trainingrun_forecast_price",
    "The run's published forecast (status.forecast): price at quantile, horizon days after its last candle.",
    ["namespace", "name", "symbol", "quantile", "horizon"],
    registry=REGISTRY,
)
RECONCILE_ERRORS = Counter(
    "trainingrun_reconcile_errors_total", "Handler invocations that raised.", ["handler"], registry=REGISTRY
)
RECONCILE_DURATION = Histogram(
    "trainingrun_reconcile_duration_seconds",
    "Handler duration.",
    ["handler"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

# Every handler ``timed`` wraps. Their series exist from the start (at 0), as Prometheus advises for known label
# values: a rate() then sees a handler's first invocations, and a quiet operator shows 0 errors, not "no data".
Handler = Literal["ensure_job", "spec_changed", "job_event", "pod_event", "delete_children", "stall_check"]
for _handler in get_args(Handler):
    RECONCILE_DURATION.labels(handler=_handler)
    RECONCILE_ERRORS.labels(handler=_handler)

_PER_RUN = (
    PHASE,
    FAILED_INFO,
    EPOCH,
    TOTAL_EPOCHS,
    TRAIN_LOSS,
    VAL_LOSS,
    BEST_VAL_LOSS,
    SAMPLES_PER_SECOND,
    LAST_PROGRESS,
    RESTARTS,
    STALLED_GAUGE,
    PENDING_INFO,
    FORECAST_PRICE,
)
# (namespace, name) -> label values currently exported, so that a run's series can be removed exactly.
_series: dict[tuple[str, str], dict[Gauge, set[tuple[str, ...]]]] = {}


@contextmanager
def timed(handler: Handler) -> Iterator[None]:
    """Duration histogram and error counter around one handler invocation."""
    start = time.perf_counter()
    try:
        yield
    except Exception:
        RECONCILE_ERRORS.labels(handler=handler).inc()
        raise
    finally:
        RECONCILE_DURATION.labels(handler=handler).observe(time.perf_counter() - start)


def _set(gauge: Gauge, key: tuple[str, str], values: tuple[str, ...], value: float) -> None:
    gauge.labels(*values).set(value)
    _series.setdefault(key, {}).setdefault(gauge, set()).add(values)


def _drop(gauge: Gauge, key: tuple[str, str], keep: set[tuple[str, ...]] | None = None) -> None:
    current = _series.get(key, {}).get(gauge, set())
    for values in list(current):
        if keep is None or values not in keep:
            with suppress(KeyError):
                gauge.remove(*values)
            current.discard(values)


def observe_run(body: Mapping[str, Any], symbol: str) -> None:
    """Set a run's gauges from its status (phase, reasons, progress); ``symbol`` from the parsed spec."""
    meta = body.get("metadata") or {}
    status = TrainingRunStatus.parse(body.get("status"))
    namespace, name = str(meta.get("namespace")), str(meta.get("name"))
    key = (namespace, name)
    run = (namespace, name, symbol)
    phase = status.phase or PENDING
    reason = status.reason or ""
    _drop(PHASE, key, {(*run, p) for p in PHASES})
    for p in PHASES:
        _set(PHASE, key, (*run, p), 1.0 if p == phase else 0.0)
    failed: set[tuple[str, ...]] = {(*run, reason or "Failed")} if phase == "Failed" else set()
    _drop(FAILED_INFO, key, failed)
    for values in failed:
        _set(FAILED_INFO, key, values, 1.0)
    pending: set[tuple[str, ...]] = (
        {(*run, reason)} if phase == PENDING and reason in PENDING_METRIC_REASONS else set()
    )
    _drop(PENDING_INFO, key, pending)
    for values in pending:
        _set(PENDING_INFO, key, values, 1.0)
    _drop(STALLED_GAUGE, key, {run})
    _set(STALLED_GAUGE, key, run, 1.0 if is_true(status.condition_list(), STALLED) else 0.0)
    _drop(RESTARTS, key, {run})
    _set(RESTARTS, key, run, float(status.restarts or 0))
    progress = status.progress or Progress()
    for gauge, value in (
        (EPOCH, progress.epoch),
        (TOTAL_EPOCHS, progress.total_epochs),
        (TRAIN_LOSS, progress.train_loss),
        (VAL_LOSS, progress.val_loss),
        (BEST_VAL_LOSS, progress.best_val_loss),
        (SAMPLES_PER_SECOND, progress.samples_per_second),
    ):
        # A value that is gone (a NaN loss is written as null) takes its series with it: no stale last value.
        _drop(gauge, key, {run} if value is not None else set())
        if value is not None:
            _set(gauge, key, run, float(value))
    _drop(LAST_PROGRESS, key, {run})
    last = parse_time(progress.last_progress_time)
    if last is not None:
        _set(LAST_PROGRESS, key, run, last.timestamp())
    prices = forecast_series(namespace, name, status.forecast)
    _drop(FORECAST_PRICE, key, set(prices))
    for values, price in prices.items():
        _set(FORECAST_PRICE, key, values, price)


def forecast_series(
    namespace: str, name: str, forecast: ForecastStatus | None
) -> dict[tuple[str, ...], float]:
    """``trainingrun_forecast_price`` label values -> price: one per quantile and day ahead ("1".."H")."""
    if forecast is None or not forecast.quantiles or not forecast.days:
        return {}
    symbol, quantiles = forecast.symbol or "", forecast.quantiles
    return {
        (namespace, name, symbol, f"{q:g}", str(h)): float(v)
        for h, day in enumerate(forecast.days, start=1)
        for q, v in zip(quantiles, day.values, strict=False)
        if v is not None
    }


def forget_run(namespace: str, name: str) -> None:
    """Remove every series of a deleted run."""
    key = (namespace, name)
    for gauge in _PER_RUN:
        _drop(gauge, key)
    _series.pop(key, None)


def count_transition(namespace: str, symbol: str, old_phase: str | None, new_phase: str, reason: str) -> None:
    if new_phase == old_phase:
        return
    if new_phase == "Failed":
        FAILURES.labels(namespace=namespace, symbol=symbol, reason=reason or "Failed").inc()
    elif new_phase == "Succeeded":
        SUCCEEDED.labels(namespace=namespace, symbol=symbol).inc()


# --- TrainingSchedules ---------------------------------------------------------------------------------------

SCHEDULE_RUNS = Counter(
    "trainingschedule_runs_created_total",
    "TrainingRuns created by a TrainingSchedule (this operator process).",
    ["namespace", "name"],
    registry=REGISTRY,
)
SCHEDULE_MODEL = Gauge(
    "trainingschedule_current_model_metric",
    "The promotion metric of the schedule's current model (status.currentModel.value).",
    ["namespace", "name", "metric"],
    registry=REGISTRY,
)
_schedule_series: dict[tuple[str, str], set[tuple[str, ...]]] = {}


def count_schedule_run(namespace: str, name: str) -> None:
    SCHEDULE_RUNS.labels(namespace=namespace, name=name).inc()


def observe_schedule(namespace: str, name: str, current: Mapping[str, Any] | None) -> None:
    """The current model's gauge from ``status.currentModel`` (none without a promoted model)."""
    value = (current or {}).get("value")
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    values: set[tuple[str, ...]] = set()
    if numeric:
        values.add((namespace, name, str((current or {}).get("metric") or "")))
    for stale in _schedule_series.pop((namespace, name), set()) - values:
        with suppress(KeyError):
            SCHEDULE_MODEL.remove(*stale)
    for labels in values:
        SCHEDULE_MODEL.labels(*labels).set(float(value))  # type: ignore[arg-type]
        _schedule_series[(namespace, name)] = values


def forget_schedule(namespace: str, name: str) -> None:
    """Remove a deleted schedule's series."""
    observe_schedule(namespace, name, None)
    with suppress(KeyError):
        SCHEDULE_RUNS.remove(namespace, name)


# --- HTTP ---------------------------------------------------------------------------------------------------


async def _metrics(_: web.Request) -> web.Response:
    body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, REGISTRY)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(_: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def start_server(host: str, port: int) -> web.AppRunner:
    """Serve /metrics and /healthz on the operator's event loop; returns the runner to stop at cleanup."""
    app = web.Application()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    log.info("metrics and health on http://%s:%d/metrics and /healthz", host, port)
    return runner
