"""The training windows of a data-parallel run, built once per machine and mapped by every rank on it.

Why: the windows are the run's memory (N origins x L days x F features, float32: 200 series x 5 years is
about 1.3 GB), and under torchrun every rank is its own process. Built per rank, a machine with 8 ranks holds
eight copies. Here local rank 0 builds them and writes the tensors to one file (``torch.save``; in
``$TRAINER_SHARED_DIR``, else the temporary directory); every rank of the machine, rank 0 included, then
``torch.load(mmap=True)``s that file, so the pages are the kernel's page cache, shared, and counted once. The
file is unlinked as soon as every rank has mapped it (the mappings outlive the name). The other ranks build only
the small validation and calibration windows. On GPUs each rank still copies the windows to its own device.

Nothing here is a data loader of its own: a batch is still an index into these tensors (``trainer.loop``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

from trainer.candles import Candles
from trainer.dataset import Split, Windows, empty_windows, split_windows
from trainer.distributed import Dist

_TENSORS = ("observed", "known", "target", "symbol", "scale", "offset")


def shared_path(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """One file per run and machine: torchrun's run id (``none`` for a static rendezvous, so also the master's
    address and port, which no two runs on one host share) and this machine's node rank."""
    base = Path(env.get("TRAINER_SHARED_DIR") or tempfile.gettempdir())
    run = env.get("TORCHELASTIC_RUN_ID") or "local"
    master = f"{env.get('MASTER_ADDR', '')}-{env.get('MASTER_PORT', '')}".strip("-")
    node = env.get("GROUP_RANK", "0")
    key = "-".join(part for part in (run, master, node) if part)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in key)
    return base / f"trainer-windows-{safe}.pt"


def _save(windows: Windows, path: Path) -> None:
    state = {k: getattr(windows, k) for k in _TENSORS}
    state["last_close"] = torch.from_numpy(windows.last_close)
    state["future_close"] = torch.from_numpy(windows.future_close)
    state["origin"] = torch.from_numpy(windows.origin.as_unit("ns").asi8.copy())
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load(path: Path) -> Windows:
    state = torch.load(path, mmap=True, weights_only=True, map_location="cpu")
    return Windows(
        observed=state["observed"],
        known=state["known"],
        target=state["target"],
        symbol=state["symbol"],
        scale=state["scale"],
        offset=state["offset"],
        last_close=state["last_close"].numpy(),
        future_close=state["future_close"].numpy(),
        origin=pd.DatetimeIndex(state["origin"].numpy().astype("datetime64[ns]")),
    )


def load_split(
    candles: list[Candles], input_window: int, horizon: int, validation_fraction: float, dist: Dist
) -> Split:
    """``split_windows`` for this rank; with several ranks the training windows are one mapped file per machine."""
    if not dist.enabled:
        return split_windows(candles, input_window, horizon, validation_fraction)
    path = shared_path()
    builder = dist.local_rank == 0
    split = split_windows(candles, input_window, horizon, validation_fraction, with_train=builder)
    if builder:
        _save(split.train, path)
        split.train = empty_windows(input_window, horizon)  # the private copy goes, the file stays
    try:
        dist.barrier("sharing the training windows")
        split.train = _load(path)
        dist.barrier("mapping the training windows")
    finally:
        if builder:
            path.unlink(missing_ok=True)
    return split
