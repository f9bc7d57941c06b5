"""GPU benchmark for the `device` tool: 100 SOL epochs with validation after each, wall-clock seconds.

Runs the same training twice in one process on the same GPU: plain eager PyTorch (the baseline) and the trainer's
default, the whole train step captured once as a CUDA graph and replayed per batch, with the data on the device.
Goal: <= 3 s for the captured run on an H100. Prints a table and the ratio. On a machine without CUDA it exits
with a message (it measures nothing useful on a CPU).

    python bench/bench_gpu.py [--epochs 100] [--symbols SOL] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from trainer.api.manifest import parse_spec
from trainer.candles import load_candles
from trainer.dataset import split_windows
from trainer.loop import StopFlag, Trainer


def one_run(epochs: int, symbols: list[str], cuda_graph: bool) -> tuple[float, float]:
    spec = parse_spec(
        {
            "symbol": symbols[0],
            "symbols": symbols,
            "training": {"epochs": epochs, "device": "cuda", "earlyStoppingPatience": 10_000},
        }
    )
    split = split_windows([load_candles(None, s) for s in symbols], 60, 7, 0.2)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer = Trainer(spec, split, torch.device("cuda"), cuda_graph=cuda_graph)
    stop = StopFlag()
    while not trainer.done:
        e0 = time.perf_counter()
        trainer.train_epoch(stop)
        trainer.finish_epoch(time.perf_counter() - e0)  # validation + metrics each epoch (one host sync)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, trainer.loop.best_val_loss


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--symbols", default="SOL")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: run this with the device tool on a GPU machine", file=sys.stderr)
        return 1
    symbols = args.symbols.split(",")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}, {args.epochs} epochs of {symbols}")
    results: dict[str, float] = {}
    for name, graph in (("eager", False), ("cuda-graph", True)):
        times = [one_run(args.epochs, symbols, graph)[0] for _ in range(args.repeat)]
        results[name] = min(times)
        print(f"{name:>10}: {', '.join(f'{t:.2f} s' for t in times)}")
    print(f"speed-up of the captured step: {results['eager'] / results['cuda-graph']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
