"""Save and restore the state of every random generator a training run uses (torch, CUDA, numpy, Python).

Why a module of its own: bit-for-bit resume needs each generator continued exactly, and the state must be
stored as tensors and plain values so that a checkpoint stays loadable with ``torch.load(weights_only=True)``;
that encoding is a concern apart from the training loop in ``trainer.loop``.

Python's generator is the trainer's own ``PYTHON`` (a ``random.Random``), not the global one of the ``random``
module: libraries draw from that one on their own threads (botocore's retry jitter, during a storage outage),
so its state at a checkpoint would depend on the network. Trainer code that needs Python randomness uses
``rng.PYTHON``.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

#: The trainer's Python generator, seeded with the run's seed (``Trainer``) and saved in every checkpoint.
PYTHON = random.Random()


def rng_state() -> dict[str, Any]:
    """Every generator a resumed run must continue, as tensors and plain values (``weights_only``-loadable)."""
    np_state: dict[str, Any] = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy_key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
        "numpy_pos": int(np_state["state"]["pos"]),
        "numpy_gauss": [int(np_state["has_gauss"]), float(np_state["gauss"])],
        "python": [int(x) for x in PYTHON.getstate()[1]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        {
            "bit_generator": "MT19937",
            "state": {"key": state["numpy_key"].numpy().astype(np.uint32), "pos": int(state["numpy_pos"])},
            "has_gauss": int(state["numpy_gauss"][0]),
            "gauss": float(state["numpy_gauss"][1]),
        }
    )
    PYTHON.setstate((3, tuple(int(x) for x in state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
