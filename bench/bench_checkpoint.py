"""Checkpoint save+upload and download+verify+load time: local SeaweedFS S3 vs local disk, same process.

Why: checkpointing every epoch must stay cheap next to an epoch of training; this shows what S3 adds over a
local disk for a state the size of the default model (weights + AdamW moments, ~1-2 MB).

    .venv/bin/python bench/bench_checkpoint.py [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.s3server import S3Server
from trainer.checkpoint import CheckpointStore


def default_sized_state() -> tuple[dict[str, Any], int, str]:
    """Model + AdamW state after one step; the real TFT if it exists, else an LSTM+Linear of similar size."""
    model: torch.nn.Module
    try:  # the real default model (lead's trainer.model), built as the trainer builds it
        from trainer.dataset import KNOWN, OBSERVED
        from trainer.model import TemporalFusionTransformer

        model = TemporalFusionTransformer(len(OBSERVED), len(KNOWN), n_symbols=1, horizon=7)
        name = "TemporalFusionTransformer (default spec)"
    except Exception:  # the model is not there yet: an LSTM+Linear of a similar size
        model = torch.nn.Sequential()
        model.add_module("lstm", torch.nn.LSTM(input_size=16, hidden_size=96, num_layers=2, batch_first=True))
        model.add_module("head", torch.nn.Linear(96, 21))
        name = "LSTM+Linear stand-in"
    params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    state = {
        "epoch": 1,
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state()},
        "config": {"symbol": "SOL", "hiddenSize": 96},
    }
    return state, params, name


def median_ms(fn: Callable[[int], object], repeats: int) -> float:
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench(store: CheckpointStore, state: dict[str, Any], repeats: int) -> tuple[float, float]:
    def save(i: int) -> None:
        store.save(i + 1, state, is_best=False)
        store.flush(60)

    reader = CheckpointStore(store.uri(), store.endpoint)  # a fresh process's store: one client, reused

    def load(_: int) -> None:
        loaded = reader.latest()
        assert loaded is not None and not loaded.skipped

    save(-1)  # warm-up (client connection, first directory)
    return median_ms(save, repeats), median_ms(load, repeats)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    torch.manual_seed(0)
    state, params, name = default_sized_state()
    size = 0
    with tempfile.TemporaryDirectory() as tmp:
        server = S3Server(Path(tmp) / "s3")
        server.start()
        try:
            os.environ.update(server.env)
            local = CheckpointStore(str(Path(tmp) / "local"), keep_last=3)
            s3 = CheckpointStore(f"s3://{server.create_bucket()}/bench", keep_last=3)
            local_save, local_load = bench(local, state, args.repeats)
            s3_save, s3_load = bench(s3, state, args.repeats)
            size = len(local.storage.get(f"checkpoints/epoch-{args.repeats:06d}.pt"))
            local.close()
            s3.close()
        finally:
            server.close()
    print(
        f"state: {name}, {params:,} float32 params + AdamW moments, checkpoint {size / 1e6:.2f} MB; "
        f"median of {args.repeats}; torch {torch.__version__}, {os.cpu_count()} CPUs"
    )
    print(f"{'operation':<34}{'local disk':>12}{'SeaweedFS S3':>14}{'S3/local':>10}")
    for name, lo, s3v in (
        ("save + upload (+latest.json, prune)", local_save, s3_save),
        ("download + sha256 + torch.load", local_load, s3_load),
    ):
        print(f"{name:<34}{lo:>10.1f}ms{s3v:>12.1f}ms{s3v / lo:>9.1f}x")


if __name__ == "__main__":
    main()
