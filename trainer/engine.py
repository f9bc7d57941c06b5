"""Model construction and inference shared by training, backtests and predictions.

Why separate from the training loop: ``backtest`` and ``predict`` rebuild the model from nothing but a
checkpoint (its saved config and per-symbol scales), so construction and the scaled-return -> price transform must
be one piece of code that all three use.
"""

from __future__ import annotations

import ctypes
import gc
import random
from typing import Any

import numpy as np
import torch

from trainer.api.errors import DeviceUnavailable
from trainer.api.spec import TrainingRunSpec
from trainer.dataset import FEATURES_VERSION, KNOWN, OBSERVED, Windows
from trainer.model import TemporalFusionTransformer


def resolve_device(choice: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a usable GPU is a DeviceUnavailable (exit 2)."""
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                "--device/training.device is 'cuda' but this machine has no usable CUDA device "
                f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use auto or cpu"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def return_freed_memory() -> None:
    """Hand the heap that training freed back to the operating system (glibc's ``malloc_trim``; elsewhere only a
    garbage collection).

    Why: the evaluation after training loads arch, scipy, statsmodels and matplotlib (about 120 MB); glibc keeps
    freed training buffers in the process's resident set, and that sum is what pushes a default run's peak RSS
    past 500 MB."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim(0)
