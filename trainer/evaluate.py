"""``backtest`` and ``predict``: use a trained model on any OHLCV file, with nothing but its checkpoint.

Why they rebuild everything from the checkpoint: a model is only meaningful with the exact data transform and
post-hoc decisions it was trained with (window sizes, features, the shipped median, the band's recalibration),
so those are saved in the checkpoint and used here; the spec in the file cannot drift from the weights. A symbol
the model never trained on is scored with the learned "any symbol" embedding and its own volatility scale
(zero-shot), and every evaluation reports the baselines computed from the evaluated series itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from trainer.api.errors import ConfigError
from trainer.api.manifest import parse_spec
from trainer.api.promotion import CurrentModel
from trainer.api.spec import TrainingRunSpec
from trainer.calibrate import Calibration, adaptive
from trainer.candles import Candles, load_candles
from trainer.dataset import FEATURES_VERSION, WARMUP_DAYS, Windows, make_windows
from trainer.forecast_metrics import forecast_metrics
from trainer.model import TemporalFusionTransformer
from trainer.modelling import build_model, predict_scaled


class EvaluationError(ConfigError, ValueError):
    """An evaluation that cannot run as asked (no windows in range, a checkpoint from an older trainer): exit 2."""


@dataclass
class Forecaster:
    """A trained model with everything needed to turn windows into shipped price quantiles."""

    model: TemporalFusionTransformer
    spec: TrainingRunSpec
    trained: list[str]  # symbols that had training windows (others are zero-shot)
    calibration: Calibration | None
    source: str = ""

    @property
    def quantiles(self) -> list[float]:
        return self.spec.model.quantiles

    def symbol_index(self, symbol: str) -> tuple[int, bool]:
        """(embedding row, zero_shot): a trained symbol's own row, otherwise the learned "any symbol" row."""
        if symbol in self.trained:
            return self.spec.all_symbols.index(symbol), False
        return len(self.spec.all_symbols), True

    def raw_scaled(self, w: Windows) -> np.ndarray:
        """(N, H, Q) the network's scaled quantiles, before the post-hoc decisions."""
        return predict_scaled(self.model, w).float().cpu().numpy()

    def scaled(self, w: Windows, *, recalibrate: bool = False) -> np.ndarray:
        out = self.raw_scaled(w)
        if self.calibration is not None:
            out = self.calibration.apply(out, w, self.quantiles.index(0.5))
        if recalibrate:
            out = adaptive(out, w.target.numpy(), self.quantiles)
        return out

    def prices(self, w: Windows, *, recalibrate: bool = False) -> np.ndarray:
        return to_prices(self.scaled(w, recalibrate=recalibrate), w)


def to_prices(scaled: np.ndarray, w: Windows) -> np.ndarray:
    """Scaled return quantiles (N, H, Q) -> price quantiles via last_close * exp(q * scale + offset)."""
    log_ret = scaled * w.scale.numpy()[..., None] + w.offset.numpy()[..., None]
    return np.asarray(w.last_close[:, None, None] * np.exp(log_ret))


def evaluate_windows(
    prices: np.ndarray, w: Windows, frame: pd.DataFrame, fit_end: pd.Timestamp, quantiles: list[float]
) -> dict[str, Any]:
    """Model metrics and the three baselines on exactly these windows; baselines fit on ``frame`` before
    ``fit_end`` (the first evaluated target date) and use nothing after each origin."""
    from trainer.baselines import baseline_bands

    close = frame["close"].to_numpy()
    origins = frame.index.get_indexer(w.origin)
    bands = baseline_bands(
        close, origins, w.target.shape[1], quantiles, int(frame.index.searchsorted(fit_end))
    )
    return forecast_metrics(prices, w.future_close, w.last_close, quantiles, bands)


def forecaster_from_state(state: dict[str, Any], source: str) -> Forecaster:
    config = state.get("config")
    if not isinstance(config, dict) or "spec" not in config:
        raise EvaluationError(f"{source}: not a checkpoint written by this trainer (it has no saved config)")
    if config.get("featuresVersion") != FEATURES_VERSION:
        raise EvaluationError(
            f"{source}: written by an older trainer (features version {config.get('featuresVersion', 1)}, "
            f"this one reads {FEATURES_VERSION}); retrain it with this version"
        )
    spec = parse_spec(config["spec"], f"{source}:config")
    model = build_model(spec)
    try:
        model.load_state_dict(state.get("best_model") or state["model"])
    except (KeyError, RuntimeError) as exc:
        raise EvaluationError(f"{source}: its weights do not fit its own saved spec ({exc})") from None
    model.eval()
    cal = state.get("calibration")
    return Forecaster(
        model=model,
        spec=spec,
        trained=list(config.get("trained", spec.all_symbols)),
        calibration=Calibration.from_dict(cal) if cal else None,
        source=source,
    )


def load_model(checkpoint: str, endpoint: str | None = None) -> Forecaster:
    """``checkpoint``: an output directory / s3:// prefix (its best.pt), a checkpoint file, or a promotion's
    ``<prefix>/current`` (``<prefix>/current.json``): the model it names."""
    from trainer.checkpoint import CheckpointStore
    from trainer.checkpoint_read import current_pointer

    pointer = current_pointer(checkpoint, endpoint)
    if pointer is not None:
        return load_current(pointer, endpoint)
    if checkpoint.endswith(".pt") and not os.path.isdir(checkpoint):  # a directory named x.pt is a directory
        parent = checkpoint.rsplit("/", 1)[0] if "/" in checkpoint else "."
        store = CheckpointStore(parent, endpoint=endpoint)
        loaded = store.load_checkpoint(checkpoint)
    else:
        store = CheckpointStore(checkpoint, endpoint=endpoint)
        loaded = store.load_checkpoint(store.uri("best.pt"))
    return forecaster_from_state(loaded.state, loaded.uri)


def load_current(pointer: CurrentModel, endpoint: str | None = None) -> Forecaster:
    """The model a current.json names, verified against its run's best.json and the sha256 it was promoted
    with (a best.pt rewritten since is refused rather than served under the promoted name)."""
    from trainer.checkpoint import CheckpointStore
    from trainer.checkpoint_read import CheckpointIntegrityError

    store = CheckpointStore(pointer.prefix, endpoint=endpoint)
    loaded = store.load_checkpoint(pointer.model)
    if pointer.sha256 and loaded.sha256 != pointer.sha256:
        raise CheckpointIntegrityError(
            f"{loaded.uri} has sha256 {loaded.sha256[:16]}… but was promoted with {pointer.sha256[:16]}…: it "
            "was rewritten after its promotion"
        )
    return forecaster_from_state(loaded.state, loaded.uri)


def _describe(fc: Forecaster, candles: Candles, w: Windows, zero_shot: bool, **more: Any) -> dict[str, Any]:
    cal = fc.calibration
    return {
        "symbol": candles.symbol,
        "zero_shot": zero_shot,
        "first_origin": str(w.origin[0].date()),
        "last_origin": str(w.origin[-1].date()),
        "median": cal.median if cal else "learned",
        "band": cal.band if cal else "learned",
        "filled_days": candles.filled_days,
        **more,
    }


@dataclass
class Period:
    """A file's windows with origins in a period, for one symbol (``backtest`` and ``explain``)."""

    candles: Candles
    frame: pd.DataFrame  # cut at ``end``
    windows: Windows
    start: pd.Timestamp  # the first target day
    zero_shot: bool


def period_windows(
    fc: Forecaster,
    data: str | None,
    *,
    symbol: str | None,
    start: str | None,
    end: str | None,
    endpoint: str | None,
    default_days: int | None = None,
) -> Period:
    """Every origin whose whole horizon lies in [start, end]; inputs may reach back before ``start``. ``start``
    defaults to ``default_days`` before ``end``, or to the first origin the file allows."""
    sym = symbol or fc.spec.symbol
    idx, zero_shot = fc.symbol_index(sym)
    d = fc.spec.data
    candles = load_candles(data, sym, endpoint=endpoint)
    frame = candles.frame
    end_ts = pd.Timestamp(end) if end else frame.index[-1]
    if start:
        start_ts = pd.Timestamp(start)
    elif default_days is not None:
        start_ts = end_ts - pd.Timedelta(days=default_days)
    else:
        start_ts = frame.index[WARMUP_DAYS + d.input_window]
    frame = frame[frame.index <= end_ts]
    # An origin t's horizon is t+1..t+H, so the first allowed origin is the day before `start`.
    w = make_windows(
        frame,
        idx,
        d.input_window,
        d.horizon,
        first_origin=start_ts - pd.Timedelta(days=1),
        last_target=end_ts,
    )
    if len(w) == 0:
        raise EvaluationError(
            f"{candles.source}: no forecast origin has its whole {d.horizon}-day horizon inside "
            f"[{start_ts.date()}, {end_ts.date()}] with {d.input_window} input days (plus {WARMUP_DAYS} warm-up "
            "days) before it; move --start later or give a longer file"
        )
    return Period(candles, frame, w, start_ts, zero_shot)


def backtest(
    fc: Forecaster,
    data: str | None,
    *,
    symbol: str | None = None,
    start: str | None = None,
    end: str | None = None,
    endpoint: str | None = None,
    recalibrate: bool = False,
) -> dict[str, Any]:
    """Rolling origins, stride 1: every origin whose whole horizon lies in [start, end]; inputs may reach back."""
    p = period_windows(fc, data, symbol=symbol, start=start, end=end, endpoint=endpoint)
    w = p.windows
    out = evaluate_windows(fc.prices(w, recalibrate=recalibrate), w, p.frame, p.start, fc.quantiles)
    out["extra"] = _describe(fc, p.candles, w, p.zero_shot, recalibrated=recalibrate)
    return out


def predict(
    fc: Forecaster, data: str | None, *, symbol: str | None = None, endpoint: str | None = None
) -> dict[str, Any]:
    """The next horizon after the file's last day: dates with q0.1/q0.5/q0.9 prices."""
    candles = load_candles(data, symbol or fc.spec.symbol, endpoint=endpoint)
    return predict_candles(fc, candles)


def predict_candles(fc: Forecaster, candles: Candles) -> dict[str, Any]:
    """``predict`` on candles already loaded (the end of a run publishes its forecast with it)."""
    sym = candles.symbol
    idx, zero_shot = fc.symbol_index(sym)
    d = fc.spec.data
    w = make_windows(candles.frame, idx, d.input_window, d.horizon, future=True)
    if len(w) == 0:
        raise EvaluationError(
            f"{candles.source}: need at least {d.input_window + WARMUP_DAYS} days of candles to predict"
        )
    prices = fc.prices(w)[0]  # (H, Q)
    last = w.origin[0]
    rows = []
    for h in range(d.horizon):
        row: dict[str, Any] = {"date": str((last + pd.Timedelta(days=h + 1)).date())}
        for j, qq in enumerate(fc.quantiles):
            row[f"q{qq:g}"] = float(prices[h, j])
        rows.append(row)
    return {
        "symbol": sym,
        "zero_shot": zero_shot,
        "median": fc.calibration.median if fc.calibration else "learned",
        "band": fc.calibration.band if fc.calibration else "learned",
        "last_date": str(last.date()),
        "last_close": float(w.last_close[0]),
        "forecast": rows,
    }
