"""Model construction and inference shared by training, backtests and predictions.

Why separate from the training loop: ``backtest`` and ``predict`` rebuild the model from nothing but a
checkpoint (its saved config and per-symbol scales), so construction, batched inference and the config saved in
every checkpoint must be one piece of code that all three use.
"""

from __future__ import annotations

from typing import Any

import torch

from trainer.api.spec import TrainingRunSpec
from trainer.dataset import FEATURES_VERSION, KNOWN, OBSERVED, Windows
from trainer.model import TemporalFusionTransformer


def build_model(spec: TrainingRunSpec) -> TemporalFusionTransformer:
    m = spec.model
    return TemporalFusionTransformer(
        n_observed=len(OBSERVED),
        n_known=len(KNOWN),
        n_symbols=len(spec.all_symbols),
        horizon=spec.data.horizon,
        hidden_size=m.hidden_size,
        attention_heads=m.attention_heads,
        lstm_layers=m.lstm_layers,
        dropout=m.dropout,
        quantiles=m.quantiles,
    )


@torch.no_grad()
def predict_scaled(model: TemporalFusionTransformer, w: Windows, batch_size: int = 128) -> torch.Tensor:
    """(N, H, Q) scaled-return quantiles, in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs = []
    for i in range(0, len(w), batch_size):
        sl = slice(i, i + batch_size)
        outs.append(model(w.observed[sl].to(device), w.known[sl].to(device), w.symbol[sl].to(device)))
    model.train(was_training)
    if not outs:
        return torch.zeros(0, model.horizon, len(model.quantiles), device=device)
    return torch.cat(outs)


def checkpoint_config(spec: TrainingRunSpec, trained: list[str], extra: dict[str, Any]) -> dict[str, Any]:
    """The config saved in every checkpoint: the resolved spec (no secrets live in it), the feature set and the
    symbols that had training windows (any other symbol is scored zero-shot)."""
    return {
        "spec": spec.model_dump(mode="json", by_alias=True),
        "featuresVersion": FEATURES_VERSION,
        "trained": trained,
        "observed": OBSERVED,
        "known": KNOWN,
        **extra,
    }
