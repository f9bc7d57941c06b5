"""Where and how a process trains: the torch device, the seeds, and handing freed memory back.

Why apart from the model: every command (train, run, backtest, predict, walk-forward) picks a device and seeds
the same way before anything is built; none of it depends on the model.
"""

from __future__ import annotations

import ctypes
import gc
import random

import numpy as np
import torch

from trainer.api.errors import DeviceUnavailable


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
