"""One training run from a spec to artifacts: load data, split, train, checkpoint, evaluate, write results.

This is what ``python -m trainer run`` and ``train`` call, locally and in a pod alike; the only cluster-specific
part is the status reporter, which is a no-op outside a cluster. ``run_training`` is the recipe; the steps are
methods of ``_Run``, which holds the parts of one run.

How a run ends: the checkpoint store and the status reporter are context managers, so however the run ends
(success, SIGTERM, a NaN loss) the last status update goes out and the store's uploader stops. A signal has one
way out (``StopFlag``): the loop finishes its step and checkpoints, then the run waits for the upload within
``gracePeriodSeconds``, names the checkpoint and exits 143 -- also when the signal comes after the last epoch,
during evaluation. Progress goes through one ``on_epoch(stats)`` (the epoch line, MLflow when the spec tracks
the run -- ``trainer.tracking``, never waited for -- and the status); a checkpoint is named (epoch line,
``status.checkpoint``) only once it is stored. While a run lasts, the trainer's log lines (an upload that
failed or recovered, a checkpoint fallback) are printed like its progress: a JSON line when not in a terminal.

Under torchrun every rank runs this recipe up to the end of training (``trainer.distributed``); rank 0 alone
prints, reports status, writes checkpoints and artefacts, and evaluates. The other ranks read the checkpoint
they resume from and return None when training ends; their errors still reach stderr through the CLI.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from trainer.api.endpoint import resolve_s3_endpoint
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import EpochStats
from trainer.calibrate import Calibration, fit_calibration
from trainer.candles import Candles, load_candles
from trainer.console import Progress, summary_table
from trainer.dataset import KNOWN, OBSERVED, WARMUP_DAYS, Split
from trainer.device import resolve_device, return_freed_memory
from trainer.distributed import Dist, collective_errors
from trainer.evaluate import Forecaster, evaluate_windows
from trainer.loop import StopFlag, Trainer, best_model
from trainer.model import count_parameters
from trainer.modelling import checkpoint_config
from trainer.shared import load_split
from trainer.tracking import start_tracking

if TYPE_CHECKING:
    from trainer.checkpoint import CheckpointStore, Stored
    from trainer.status_report import StatusReporter
    from trainer.tracking import Tracker


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


def run_training(spec: TrainingRunSpec, opts: RunOptions) -> dict[str, Any] | None:
    """Train ``spec`` and write artifacts under ``opts.output``; returns the summary (also metrics.json), or
    None on the ranks other than 0 of a data-parallel run."""
    from trainer.checkpoint import CheckpointStore
    from trainer.status_report import StatusReporter

    t0 = time.perf_counter()
    resolved = resolve_s3_endpoint(flag=opts.s3_endpoint, spec=spec.checkpoint.s3_endpoint)
    endpoint = (
        resolved.url if resolved else None
    )  # None: the environment's, resolved where the client is built
    c = spec.checkpoint
    store = CheckpointStore(
        opts.output, endpoint=endpoint, keep_last=c.keep_last, upload_deadline_s=c.upload_deadline_seconds
    )
    dist = Dist.from_env()
    # Before storage and data: --device cuda without a GPU. One GPU per local rank.
    device = dist.device(resolve_device(spec.training.device))
    dist.check_batch(spec.training.batch_size)
    store.check()  # fail fast on credentials, bucket or URI, before any training
    tracker = start_tracking(spec, opts.name, store.uri(), resume=opts.resume, main=dist.is_main)
    candles = load_all(spec, endpoint)
    dist.init(device)
    d = spec.data
    split = load_split(candles, d.input_window, d.horizon, d.validation_fraction, dist)
    main = dist.is_main
    quiet = None if main else open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        trainer = Trainer(spec, split, device, dist=dist)
        reporter = StatusReporter.from_env() if opts.report and main else StatusReporter(None)
        progress = Progress(spec.training.epochs, 0, interactive=opts.interactive and main, stream=quiet)
        run = _Run(spec, opts, trainer, split, candles, store, reporter, progress, tracker)
        with store, reporter, _printed_by(progress), tracker, StopFlag(run.stopped) as stop:
            run.resume()
            with collective_errors("training"):
                run.train(stop)
            stop.at_once()  # no step left to finish: from here a signal stops the run where it is
            return run.finish(t0) if main else None
    finally:
        dist.close()
        if quiet is not None:
            quiet.close()


@dataclass
class _Run:
    """The parts of one training run and the steps of ``run_training``."""

    spec: TrainingRunSpec
    opts: RunOptions
    trainer: Trainer
    split: Split
    candles: list[Candles]
    store: CheckpointStore
    reporter: StatusReporter
    progress: Progress
    tracker: Tracker
    config: dict[str, Any] = field(init=False)
    _reported: Stored | None = None

    def __post_init__(self) -> None:
        self.config = checkpoint_config(self.spec, self.split.trained, {"cut": str(self.split.cut.date())})

    def resume(self) -> None:
        """Continue from the store's checkpoint (``opts.resume``), and say what is about to be trained."""
        from trainer.checkpoint import resolve_resume

        t, total = self.trainer, self.spec.training.epochs
        resumed = resolve_resume(self.store, self.opts.resume, self.spec, t.device)
        if resumed is not None:
            t.load_state_dict(resumed.state)
            message = f"resuming from {resumed.uri} (epoch {t.loop.epoch}/{total})"
            self.progress.log("resume", message=message, uri=resumed.uri, epoch=t.loop.epoch)
            if self.progress.bar is not None:
                self.progress.bar.update(t.loop.epoch)
        self.progress.log(
            "start",
            message=f"{self.spec.symbol}: {len(self.split.train)} training and {len(self.split.val)} validation "
            f"windows, {count_parameters(t.model):,} parameters, device {t.device}",
            train_windows=len(self.split.train),
            val_windows=len(self.split.val),
            device=str(t.device),
        )

    def train(self, stop: StopFlag) -> None:
        """Epochs until done, each followed by a checkpoint when one is due; a signal leaves with one."""
        t, every = self.trainer, self.spec.checkpoint.every_epochs
        try:
            while not t.done:
                e0 = time.perf_counter()
                if not t.train_epoch(stop):  # a signal mid-epoch: checkpoint where we are and leave
                    self.save(is_best=False)
                    raise stop.preempted()
                stats, is_best = t.finish_epoch(time.perf_counter() - e0)
                stopping = t.dist.any(bool(stop), t.device)  # the same decision on every rank
                if stats.epoch % every == 0 or is_best or t.done or stopping:
                    self.save(is_best=is_best)
                self.on_epoch(stats)
                if stopping:  # it came during validation: this epoch's checkpoint is the one to resume from
                    raise stop.preempted()
            if t.loop.epoch < self.spec.training.epochs:
                self.progress.stopped_early(t.loop.epoch, t.loop.best_epoch)
        finally:
            self.progress.close()

    def save(self, *, is_best: bool) -> None:
        """Queue a checkpoint of where the trainer is (uploaded in the background); every rank calls this at
        the same points (their generator states are gathered into it), rank 0 writes it."""
        self.trainer.gather_rng()
        if self.trainer.dist.is_main:
            self.store.save(self.trainer.loop.epoch, self.trainer.state_dict(self.config), is_best=is_best)

    def on_epoch(self, stats: EpochStats) -> None:
        """Where an epoch's progress goes: the epoch line (or the bar), MLflow and the TrainingRun's status."""
        stored = self.report_stored()
        stats.checkpoint = stored.latest if stored is not None else None
        self.progress.epoch(stats)
        self.tracker.epoch(stats, self.reporter)
        self.reporter.epoch(stats, finished=self.trainer.done)

    def report_stored(self) -> Stored | None:
        """The newest stored checkpoint, handed to the status reporter when it is a new one."""
        stored = self.store.stored
        if stored is not None and stored != self._reported:
            self.reporter.checkpoint(latest=stored.latest, best=stored.best, epoch=stored.epoch)
            self._reported = stored
        return stored

    def stopped(self, signum: int | None) -> None:
        """The way out on a signal (``StopFlag``): wait for the uploads within the grace period, name the
        checkpoint a restart resumes from."""
        self.store.flush(timeout=self.spec.checkpoint.grace_period_seconds)
        stored = self.report_stored()
        uri = stored.latest if stored is not None else None
        where = f"checkpoint {uri}" if uri else "no new checkpoint"
        self.progress.log("preempted", message=f"stopped by signal {signum}; {where}", uri=uri)

    def finish(self, t0: float) -> dict[str, Any]:
        """Calibrate and evaluate the best model, store it with the artefacts, publish its forecast (and
        promote it: ``trainer.publish``), report the final metrics."""
        from trainer.checkpoint import json_bytes
        from trainer.interpret import importance_png, interpretation
        from trainer.publish import publish

        trainer, split, spec, store = self.trainer, self.split, self.spec, self.store
        forecaster = calibrated_forecaster(trainer, split)
        cal = forecaster.calibration
        assert cal is not None  # calibrated_forecaster always calibrates
        # The post-hoc decisions belong to the shipped model: store them in a final best checkpoint.
        store.save(trainer.loop.epoch, trainer.state_dict(self.config), is_best=True)
        buf = io.BytesIO()
        torch.save(trainer.state_dict(self.config), buf)
        store.write_bytes("last.pt", buf.getvalue())
        del buf
        prices = forecaster.prices(split.val)
        interp = interpretation(
            forecaster.model, split.val.observed, split.val.known, split.val.symbol, OBSERVED, KNOWN
        )
        # What needs torch is done and serialised: free training's memory before the evaluation libraries
        # (arch, scipy, statsmodels, matplotlib) load, so that the peak stays that of training.
        trainer.release_training_state()
        split.train = trainer.train
        return_freed_memory()
        metrics = evaluate_windows(prices, split.val, self.candles[0].frame, split.cut, forecaster.quantiles)
        metrics["val_loss"] = trainer.loop.best_val_loss
        summary = self.summary(metrics, interp, cal, time.perf_counter() - t0)
        store.write_json("config.json", self.config)
        from trainer.plot import forecast_png  # matplotlib, once training's memory is given back

        files = {
            "metrics.json": json_bytes(summary),
            "forecast.png": forecast_png(split.val, prices, spec),
            "importance.png": importance_png(summary["interpretation"]),
        }
        for name, data in files.items():
            store.write_bytes(name, data)
        store.flush(timeout=spec.checkpoint.upload_deadline_seconds)
        self.report_stored()
        summary |= publish(
            spec, self.opts.name, store, self.reporter, forecaster, self.candles[0], split, metrics
        )
        final = final_metrics(metrics, cal, trainer, float(summary["wall_seconds"]))
        self.tracker.finish(final, files, epoch=trainer.loop.epoch, reporter=self.reporter)
        self.reporter.final(final)
        return summary

    def summary(
        self, metrics: dict[str, Any], interp: dict[str, Any], cal: Calibration, wall_seconds: float
    ) -> dict[str, Any]:
        """What metrics.json holds and the summary table shows."""
        trainer, split, spec = self.trainer, self.split, self.spec
        return {
            "name": self.opts.name,
            "symbol": spec.symbol,
            "symbols": spec.all_symbols,
            "epochs_run": trainer.loop.epoch,
            "early_stopped": trainer.loop.epoch < spec.training.epochs,
            "best_epoch": trainer.loop.best_epoch,
            "best_val_loss": trainer.loop.best_val_loss,
            "metrics": metrics,
            "interpretation": interp,
            "median": {"shipped": cal.median, **cal.median_test},
            "band": {"shipped": cal.band, **cal.band_test},
            "validation": {"start": str(split.cut.date()), "end": str(split.period[1].date())},
            "wall_seconds": wall_seconds,
            "parameters": count_parameters(trainer.model),
            "filled_days": {c.symbol: c.filled_days for c in self.candles},
            "output": self.opts.output,
            "history": trainer.loop.history,
            "device": str(trainer.device),
            "world_size": trainer.dist.world_size,
        }


def final_metrics(
    metrics: dict[str, Any], cal: Calibration, trainer: Trainer, wall_seconds: float
) -> dict[str, float | int | str]:
    """``status.metrics`` (``trainer.api.status.Metrics``, which rounds them) from the validation metrics."""
    baselines: dict[str, dict[str, float]] = metrics["baselines"]
    return {
        "valMae": metrics["mae"],
        "valMase": metrics["mase"],
        "valLoss": trainer.loop.best_val_loss,
        "coverage80": metrics["coverage_80"],
        "pinball": metrics["pinball"],
        **{f"{k}Pinball": b["pinball"] for k, b in baselines.items()},
        "skillVsGarch": baselines["garch"]["skill"],
        "median": cal.median,
        "band": cal.band,
        "bestEpoch": trainer.loop.best_epoch,
        "wallSeconds": wall_seconds,
        "parameters": count_parameters(trainer.model),
    }


# Credentials in a URL's userinfo (``http://key:secret@host``), wherever a log line mentions one.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]*://)[^/?#\s@]+@")


class _ProgressHandler(logging.Handler):
    """A log record of the ``trainer`` package printed by ``Progress.log``: ``{"event": "warning", ...}``."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = _USERINFO.sub(r"\g<scheme>***@", record.getMessage())
            self.progress.log(record.levelname.lower(), message=message, logger=record.name)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def _printed_by(progress: Progress) -> Iterator[None]:
    """For the block, the ``trainer`` loggers' INFO and above go through ``progress`` (JSON lines when not in
    a terminal) instead of Python's bare last-resort text on stderr; the bar is closed at the end."""
    logger = logging.getLogger("trainer")
    handler, level = _ProgressHandler(progress), logger.level
    logger.addHandler(handler)
    if level == logging.NOTSET:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        progress.close()


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
