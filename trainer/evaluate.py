"""``backtest`` and ``predict``: use a trained model on any OHLCV file, with nothing but its checkpoint.

Why they rebuild everything from the checkpoint: a model is only meaningful with the exact data transform it was
trained with (window sizes, features, per-symbol scales), so those are saved in the checkpoint's config and used
here; the spec in the file cannot drift from the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from trainer.candles import load_candles
from trainer.dataset import SymbolStats, make_windows
from trainer.engine import build_model, predict_scaled, to_prices
from trainer.metrics import forecast_metrics
from trainer.model import TemporalFusionTransformer
from trainer.spec import TrainingRunSpec, parse_spec


@dataclass
class LoadedModel:
    model: TemporalFusionTransformer
    spec: TrainingRunSpec
    stats: dict[str, SymbolStats]
    source: str


def model_from_state(state: dict[str, Any], source: str) -> LoadedModel:
    config = state["config"]
    spec = parse_spec(config["spec"], f"{source}:config")
    model = build_model(spec)
    weights = state.get("best_model") or state["model"]
    model.load_state_dict(weights)
    model.eval()
    stats = {k: SymbolStats.from_dict(v) for k, v in config["symbolStats"].items()}
    return LoadedModel(model=model, spec=spec, stats=stats, source=source)


def load_model(checkpoint: str, endpoint: str | None = None) -> LoadedModel:
    """``checkpoint``: an output directory / s3:// prefix (its best.pt) or a checkpoint file."""
    from trainer.checkpoint import CheckpointStore

    if checkpoint.endswith(".pt"):
        parent = checkpoint.rsplit("/", 1)[0] if "/" in checkpoint else "."
        store = CheckpointStore(parent, endpoint=endpoint)
        loaded = store.load_checkpoint(checkpoint)
    else:
        store = CheckpointStore(checkpoint, endpoint=endpoint)
        loaded = store.load_checkpoint(store.uri("best.pt"))
    return model_from_state(loaded.state, loaded.uri)


def _symbol(lm: LoadedModel, symbol: str | None) -> tuple[str, int]:
    symbols = lm.spec.all_symbols
    sym = symbol or lm.spec.symbol
    if sym not in symbols or sym not in lm.stats:
        trained = [s for s in symbols if s in lm.stats]
        raise ValueError(f"--symbol {sym}: this model was trained on {', '.join(trained)}; pick one of them")
    return sym, symbols.index(sym)


def backtest(
    lm: LoadedModel,
    data: str | None,
    *,
    symbol: str | None = None,
    start: str | None = None,
    end: str | None = None,
    endpoint: str | None = None,
) -> dict[str, Any]:
    """Rolling origins, stride 1: every origin whose whole horizon lies in [start, end]; inputs may reach back."""
    sym, idx = _symbol(lm, symbol)
    d = lm.spec.data
    candles = load_candles(data, sym, endpoint=endpoint)
    frame = candles.frame
    end_ts = pd.Timestamp(end) if end else frame.index[-1]
    start_ts = pd.Timestamp(start) if start else frame.index[0]
    # An origin t's horizon is t+1..t+H, so the first allowed origin is the day before `start`.
    w = make_windows(
        frame[frame.index <= end_ts],
        idx,
        lm.stats[sym],
        d.input_window,
        d.horizon,
        first_origin=start_ts - pd.Timedelta(days=1),
        last_target=end_ts,
    )
    if len(w) == 0:
        raise ValueError(
            f"{candles.source}: no forecast origin has its whole {d.horizon}-day horizon inside "
            f"[{start_ts.date()}, {end_ts.date()}] with {d.input_window} input days (plus 30 warm-up days) before it"
        )
    prices = to_prices(predict_scaled(lm.model, w), w)
    m = forecast_metrics(
        prices, w.future_close, w.last_close, lm.spec.model.quantiles, np.asarray(lm.stats[sym].band)
    )
    keys = ("n", "mae", "rmse", "mape", "mase", "da_h1", "da_h7", "pinball", "coverage_80")
    out = {k: m[k] for k in keys}
    out["extra"] = {
        "symbol": sym,
        "first_origin": str(w.origin[0].date()),
        "last_origin": str(w.origin[-1].date()),
        "persistence_mae": m["naive_mae"],
        "empirical_band_pinball": m.get("baseline_pinball"),
        "filled_days": candles.filled_days,
    }
    return out


def predict(
    lm: LoadedModel, data: str | None, *, symbol: str | None = None, endpoint: str | None = None
) -> dict[str, Any]:
    """The next horizon after the file's last day: dates with q0.1/q0.5/q0.9 prices."""
    sym, idx = _symbol(lm, symbol)
    d = lm.spec.data
    candles = load_candles(data, sym, endpoint=endpoint)
    w = make_windows(candles.frame, idx, lm.stats[sym], d.input_window, d.horizon, future=True)
    if len(w) == 0:
        raise ValueError(f"{candles.source}: need at least {d.input_window + 30} days of candles to predict")
    with torch.no_grad():
        prices = to_prices(predict_scaled(lm.model, w), w)[0]  # (H, Q)
    q = lm.spec.model.quantiles
    last = w.origin[0]
    rows = []
    for h in range(d.horizon):
        row: dict[str, Any] = {"date": str((last + pd.Timedelta(days=h + 1)).date())}
        for j, qq in enumerate(q):
            row[f"q{qq:g}"] = float(prices[h, j])
        rows.append(row)
    return {
        "symbol": sym,
        "last_date": str(last.date()),
        "last_close": float(w.last_close[0]),
        "forecast": rows,
    }
