"""What a walk-forward costs beyond its trainings: wall time of ``walk_forward`` (sequential, one process) against
the sum of its folds' training times, measured in the same run.

Goal: a walk-forward of 10 folds costs no more than about 10 trainings plus 10% (the rest is data loading,
baselines -- a GARCH fit per fold --, the post-hoc calibration and evaluation).

    python bench/bench_walkforward.py [--symbol SOL] [--start 2023-01-01] [--refit-every 90] [--threads 2]
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import torch

from trainer.api.manifest import load_manifest
from trainer.candles import load_candles
from trainer.run import load_all
from trainer.walkforward import walk_forward


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", default="manifests/samples/sol-run.yaml")
    ap.add_argument("--symbol", default="SOL")
    ap.add_argument("--start", default="2023-01-01")
    ap.add_argument("--refit-every", type=int, default=90)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    _, spec = load_manifest(args.manifest)
    t0 = time.perf_counter()
    target = load_candles(None, args.symbol)
    candles = [target if c.symbol == args.symbol else c for c in load_all(spec, None)]
    r = walk_forward(
        spec, candles, target, start=pd.Timestamp(args.start), refit_every_days=args.refit_every, jobs=1
    )
    wall = time.perf_counter() - t0
    trainings = sum(f["train_seconds"] for f in r["folds"])
    print(
        f"{args.symbol} walk-forward from {args.start}, {len(r['folds'])} folds: wall {wall:.1f} s, "
        f"trainings {trainings:.1f} s, overhead {wall / trainings - 1:+.1%} "
        f"(pooled pinball {r['pinball']:.4f}, GARCH {r['baselines']['garch']['pinball']:.4f})"
    )


if __name__ == "__main__":
    main()
