"""One training run from a spec to artifacts: load data, split, train, checkpoint, evaluate, write results.

This is what ``python -m trainer run`` and ``train`` call, locally and in a pod alike; the only cluster-specific
part is the status reporter, which is a no-op outside a cluster. Checkpoint storage (local directory or S3),
resume and SIGTERM handling are wired here so the loop in ``trainer.train`` stays about training.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainer import exitcodes
from trainer.calibrate import fit_calibration
from trainer.candles import Candles, load_candles
from trainer.dataset import KNOWN, OBSERVED, WARMUP_DAYS, Split, split_windows
from trainer.engine import checkpoint_config, resolve_device
from trainer.evaluate import Forecaster, evaluate_windows
from trainer.model import count_parameters
from trainer.progress import Progress, summary_table
from trainer.spec import TrainingRunSpec
from trainer.train import StopFlag, Trainer, TrainingAborted, best_model


@dataclass
class RunOptions:
    name: str
    output: str
    s3_endpoint: str | None = None
    resume: str = "auto"
    interactive: bool | None = None
    report: bool = True  # patch the TrainingRun's status when running in a cluster


def load_all(spec: TrainingRunSpec, endpoint: str | None) -> list[Candles]:
    d = spec.data
    need = WARMUP_DAYS + d.input_window + d.horizon + 2
    return [
        load_candles(d.uri, sym, endpoint=endpoint, start=d.start, end=d.end, min_rows=need)
        for sym in spec.all_symbols
    ]


def run_training(spec: TrainingRunSpec, opts: RunOptions) -> dict[str, Any]:
    """Train ``spec`` and write artifacts under ``opts.output``; returns the summary (also metrics.json)."""
    from trainer.checkpoint import CheckpointStore, resolve_resume
    from trainer.interpret import importance_png, interpretation
    from trainer.plot import forecast_png
    from trainer.report import StatusReporter

    t0 = time.perf_counter()
    endpoint = opts.s3_endpoint or spec.checkpoint.s3_endpoint
    store = CheckpointStore(
        opts.output,
        endpoint=endpoint,
        keep_last=spec.checkpoint.keep_last,
        upload_deadline_s=spec.checkpoint.upload_deadline_seconds,
    )
    store.check()  # fail fast on credentials, bucket or URI, before any training
    candles = load_all(spec, endpoint)
    split = split_windows(candles, spec.data.input_window, spec.data.horizon, spec.data.validation_fraction)
    device = resolve_device(spec.training.device)
    trainer = Trainer(spec, split, device)
    config = checkpoint_config(spec, split.trained, {"cut": str(split.cut.date())})
    reporter = StatusReporter.from_env() if opts.report else StatusReporter(None)
    progress = Progress(spec.training.epochs, 0, interactive=opts.interactive)

    resumed = resolve_resume(store, opts.resume, spec, device)
    if resumed is not None:
        trainer.load_state_dict(resumed.state)
        progress.log(
            "resume",
            message=f"resuming from {resumed.uri} (epoch {trainer.loop.epoch}/{spec.training.epochs})",
            uri=resumed.uri,
            epoch=trainer.loop.epoch,
        )
        if progress.bar is not None:
            progress.bar.update(trainer.loop.epoch)
    progress.log(
        "start",
        message=f"{spec.symbol}: {len(split.train)} training and {len(split.val)} validation "
        f"windows, {count_parameters(trainer.model):,} parameters, device {device}",
        train_windows=len(split.train),
        val_windows=len(split.val),
        device=str(device),
    )

    stop = StopFlag()
    restore_signals = stop.install()
    latest_uri: str | None = None
    try:
        while not trainer.done:
            e0 = time.perf_counter()
            finished = trainer.train_epoch(stop)
            if not finished:  # SIGTERM mid-epoch: checkpoint where we are and leave
                uri = store.save(trainer.loop.epoch, trainer.state_dict(config), is_best=False)
                store.flush(timeout=spec.checkpoint.grace_period_seconds)
                progress.log(
                    "preempted", message=f"stopped by signal {stop.signum}; checkpoint {uri}", uri=uri
                )
                raise TrainingAborted("stopped by signal", exitcodes.PREEMPTED)
            stats, is_best = trainer.finish_epoch(time.perf_counter() - e0)
            if stats.epoch % spec.checkpoint.every_epochs == 0 or is_best or trainer.done or stop:
                latest_uri = store.save(stats.epoch, trainer.state_dict(config), is_best=is_best)
                stats.checkpoint = latest_uri
                reporter.checkpoint(latest=latest_uri, best=store.uri("best.pt"), epoch=stats.epoch)
            progress.epoch(stats)
            eta = (spec.training.epochs - stats.epoch) * stats.seconds
            reporter.progress(
                epoch=stats.epoch,
                total_epochs=stats.total_epochs,
                train_loss=stats.train_loss,
                val_loss=stats.val_loss,
                val_mase=stats.val_mase,
                best_val_loss=stats.best_val_loss,
                best_epoch=stats.best_epoch,
                samples_per_second=stats.samples_per_second,
                eta_seconds=eta,
            )
            if stop:  # the signal came during validation: this epoch's checkpoint is the one to resume from
                store.flush(timeout=spec.checkpoint.grace_period_seconds)
                progress.log(
                    "preempted",
                    message=f"stopped by signal {stop.signum}; checkpoint {latest_uri}",
                    uri=latest_uri,
                )
                raise TrainingAborted("stopped by signal", exitcodes.PREEMPTED)
    finally:
        restore_signals()
        progress.close()

    forecaster, metrics, prices = evaluate_best(trainer, split, candles[0].frame)
    # The post-hoc decisions belong to the shipped model: store them in a final best checkpoint.
    store.save(trainer.loop.epoch, trainer.state_dict(config), is_best=True)
    summary: dict[str, Any] = {
        "name": opts.name,
        "symbol": spec.symbol,
        "symbols": spec.all_symbols,
        "epochs_run": trainer.loop.epoch,
        "early_stopped": trainer.loop.epoch < spec.training.epochs,
        "best_epoch": trainer.loop.best_epoch,
        "best_val_loss": trainer.loop.best_val_loss,
        "metrics": metrics,
        "interpretation": interpretation(
            forecaster.model, split.val.observed, split.val.known, split.val.symbol, OBSERVED, KNOWN
        ),
        "median": {"shipped": forecaster.calibration.median, **forecaster.calibration.median_test}
        if forecaster.calibration
        else None,
        "validation": {"start": str(split.cut.date()), "end": str(split.period[1].date())},
        "wall_seconds": time.perf_counter() - t0,
        "parameters": count_parameters(trainer.model),
        "filled_days": {c.symbol: c.filled_days for c in candles},
        "output": opts.output,
        "history": trainer.loop.history,
        "device": str(device),
    }
    final_state = trainer.state_dict(config)
    buf = io.BytesIO()
    torch.save(final_state, buf)
    store.write_bytes("last.pt", buf.getvalue())
    store.write_json("metrics.json", summary)
    store.write_json("config.json", config)
    store.write_bytes("forecast.png", forecast_png(split.val, prices, spec))
    store.write_bytes("importance.png", importance_png(summary["interpretation"]))
    store.flush(timeout=spec.checkpoint.upload_deadline_seconds)
    reporter.final(
        {
            "valMae": metrics["mae"],
            "valMase": metrics["mase"],
            "coverage80": metrics["coverage_80"],
            "pinball": metrics["pinball"],
            "baselinePinball": metrics["baselines"]["garch"]["pinball"],
            "bestEpoch": trainer.loop.best_epoch,
            "wallSeconds": float(summary["wall_seconds"]),
            "parameters": count_parameters(trainer.model),
        }
    )
    reporter.close()
    store.close()
    return summary


def calibrated_forecaster(trainer: Trainer, split: Split) -> Forecaster:
    """The best weights with the median decided and the band recalibrated on the validation period; the
    decisions also go into the trainer's state so that the final checkpoint carries them."""
    fc = Forecaster(model=best_model(trainer), spec=trainer.spec, trained=split.trained, calibration=None)
    val, calib = split.val, split.calib
    cal = fit_calibration(fc.raw_scaled(val), val, fc.raw_scaled(calib), calib, fc.quantiles)
    fc.calibration = cal
    trainer.calibration = cal.to_dict()
    return fc


def evaluate_best(
    trainer: Trainer, split: Split, frame: pd.DataFrame
) -> tuple[Forecaster, dict[str, Any], np.ndarray]:
    """The calibrated best model evaluated on the validation period against the baselines:
    (forecaster, metrics, (N, H, Q) validation prices)."""
    fc = calibrated_forecaster(trainer, split)
    prices = fc.prices(split.val)
    metrics = evaluate_windows(prices, split.val, frame, split.cut, fc.quantiles)
    metrics["val_loss"] = trainer.loop.best_val_loss
    return fc, metrics, prices


def print_summary(summary: dict[str, Any], interactive: bool) -> str:
    if interactive:
        return summary_table(summary)
    slim = {k: v for k, v in summary.items() if k not in ("history", "interpretation")}
    return json.dumps({"event": "summary", **slim}, default=str)
