"""Data-parallel training on this machine: one process against two torchrun ranks (gloo on CPU), in the same run.

Three measurements, each a ratio against one process measured just before it:

* samples/s of the default SOL run (median epoch after the first), 1 process with all threads vs 2 ranks
  with half each (the machine is the same; honest even where 2 ranks are not faster);
* the per-step all-reduce cost: DDP's gradient all-reduce (the model's parameters as one flat tensor) and the
  one-integer stop agreement, timed under torchrun against a train step;
* a synthetic scale case anyone can reproduce: ``--series`` generated random-walk series with clustered
  volatility (GARCH(1,1)-like) of ``--years`` daily candles, one epoch: windows, epoch time, and peak memory --
  the process tree's summed PSS (shared pages counted once: the training windows are one mapped file per
  machine, ``trainer.shared``) and each process's peak RSS.

    python bench/bench_ddp.py [--epochs 4] [--series 50] [--years 5] [--skip-scale]
    python bench/bench_ddp.py --series 200 --years 5        # the 200-series case (about 10 minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = str(ROOT / "manifests" / "samples" / "sol-run.yaml")


# --- process trees and their memory -----------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
    out, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parents.items() if p in frontier]
        out += frontier
    return out


def _kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Memory(threading.Thread):
    """Peak summed PSS of a process tree and the peak RSS of its largest process, polled every 0.2 s."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_pss_kib, self.peak_rss_kib, self.done = pid, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            pids = _tree(self.pid)
            self.peak_pss_kib = max(self.peak_pss_kib, sum(_kib(p, "Pss") for p in pids))
            self.peak_rss_kib = max(self.peak_rss_kib, *(_kib(p, "Rss") for p in pids))
            self.done.wait(0.2)


def train(
    ranks: int, threads: int, out: Path, extra: list[str], manifest: str = SAMPLE
) -> tuple[list[dict[str, Any]], Memory, float]:
    """Train with 1 process or ``ranks`` torchrun ranks; the epoch events, memory, wall seconds."""
    run = ["-m", "trainer", "run", manifest, "--output", str(out), "--json", "--resume", "never", *extra]
    if ranks == 1:
        cmd = [sys.executable, *run]
    else:
        launch = [
            "-m",
            "trainer.launch",
            "--standalone",
            "--nproc-per-node",
            str(ranks),
            "--max-restarts",
            "0",
        ]
        cmd = [sys.executable, *launch, *run]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    mem = Memory(proc.pid)
    mem.start()
    text, _ = proc.communicate()
    mem.done.set()
    mem.join()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{text[-3000:]}")
    lines = [json.loads(x) for x in text.splitlines() if x.startswith("{")]
    return [e for e in lines if e.get("event") == "epoch"], mem, time.perf_counter() - t0


def samples_per_second(epochs: list[dict[str, Any]]) -> float:
    rest = epochs[1:] or epochs
    return statistics.median(e["samples_per_second"] for e in rest)


def throughput(args: argparse.Namespace, tmp: Path) -> None:
    cores = os.cpu_count() or 2
    one, _, _ = train(1, cores, tmp / "one", ["--epochs", str(args.epochs)])
    two, _, _ = train(2, max(1, cores // 2), tmp / "two", ["--epochs", str(args.epochs)])
    a, b = samples_per_second(one), samples_per_second(two)
    print(
        f"default SOL run, {args.epochs} epochs: 1 process ({cores} threads) {a:,.0f} samples/s, "
        f"2 ranks ({max(1, cores // 2)} thread each) {b:,.0f} samples/s: ratio {b / a:.2f}"
    )


# --- the all-reduce, timed inside torchrun ----------------------------------------------------------------


def allreduce_worker() -> None:
    """Run under torchrun: time DDP's gradient all-reduce and the stop agreement against a train step."""
    import torch
    import torch.distributed as tdist

    from trainer.api.manifest import load_manifest
    from trainer.loop import STOP_CHECK_EVERY
    from trainer.modelling import build_model

    tdist.init_process_group("gloo")
    _, spec = load_manifest(SAMPLE)
    model = build_model(spec)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    flag = torch.zeros(1, dtype=torch.int32)

    def timed(fn: Any, n: int) -> float:
        for _ in range(10):
            fn()
        tdist.barrier()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return (time.perf_counter() - t0) / n * 1e3

    grads_ms = timed(lambda: tdist.all_reduce(flat), 200)
    stop_ms = timed(lambda: tdist.all_reduce(flag, op=tdist.ReduceOp.MAX), 500) / STOP_CHECK_EVERY
    obs = torch.randn(32, spec.data.input_window, 11)
    known = torch.randn(32, spec.data.input_window + spec.data.horizon, 5)
    sym = torch.zeros(32, dtype=torch.int64)
    opt = torch.optim.AdamW(model.parameters())

    def step() -> None:
        opt.zero_grad()
        model(obs, known, sym).square().mean().backward()
        opt.step()

    step_ms = timed(step, 30)
    if tdist.get_rank() == 0:
        print(
            f"all-reduce per step (gloo, 2 ranks, {flat.numel():,} parameters): gradients {grads_ms:.2f} ms, "
            f"stop agreement {stop_ms:.3f} ms (one per {STOP_CHECK_EVERY} steps); a local train step of 32 rows {step_ms:.1f} ms: "
            f"{(grads_ms + stop_ms) / step_ms:.1%} of a step"
        )
    tdist.destroy_process_group()


def allreduce(cores: int) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", __file__]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(max(1, cores // 2)),
        "PYTHONPATH": str(ROOT),
        "BENCH_DDP_WORKER": "1",
    }
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    print(proc.stdout.strip() or proc.stderr[-2000:])


# --- the synthetic scale case -----------------------------------------------------------------------------


def synthetic(directory: Path, series: int, years: int, seed: int = 0) -> list[str]:
    """``series`` daily OHLCV files: log returns with GARCH(1,1)-like clustered volatility, no drift."""
    rng = np.random.default_rng(seed)
    days = int(365.25 * years)
    dates = pd.date_range("2020-01-01", periods=days, freq="D")
    names = []
    for i in range(series):
        omega, alpha, beta = 2e-5, 0.08, 0.9
        var, r = np.empty(days), np.empty(days)
        var[0] = omega / (1 - alpha - beta)
        z = rng.standard_t(5, days) / np.sqrt(5 / 3)
        for t in range(days):
            if t:
                var[t] = omega + alpha * r[t - 1] ** 2 + beta * var[t - 1]
            r[t] = np.sqrt(var[t]) * z[t]
        close = 100 * np.exp(np.cumsum(r))
        open_ = np.concatenate([[100.0], close[:-1]])
        spread = np.abs(rng.normal(0, np.sqrt(var), days))
        frame = pd.DataFrame(
            {
                "date": dates.strftime("%Y-%m-%d"),
                "open": open_,
                "high": np.maximum(open_, close) * (1 + spread),
                "low": np.minimum(open_, close) * (1 - spread),
                "close": close,
                "volume": rng.lognormal(15, 0.5, days),
            }
        )
        name = f"S{i:03d}"
        frame.to_csv(directory / f"{name}-USD.csv", index=False)
        names.append(name)
    return names


def scale(args: argparse.Namespace, tmp: Path) -> None:
    import yaml

    data = tmp / "data"
    data.mkdir()
    names = synthetic(data, args.series, args.years)
    doc = yaml.safe_load(Path(SAMPLE).read_text())
    doc["spec"].update(symbol=names[0], symbols=names)
    doc["spec"]["data"]["uri"] = str(data / "{symbol}-USD.csv")
    doc["spec"]["training"]["batchSize"] = 256
    manifest = tmp / "synthetic.yaml"
    manifest.write_text(yaml.safe_dump(doc))
    cores = os.cpu_count() or 2
    rows = []
    for ranks in (1, 2):
        threads = cores if ranks == 1 else max(1, cores // 2)
        epochs, mem, wall = train(ranks, threads, tmp / f"scale{ranks}", ["--epochs", "1"], str(manifest))
        rows.append((ranks, epochs[0], mem, wall))
    windows = None
    for ranks, epoch, mem, wall in rows:
        seconds = epoch["seconds"]
        windows = windows or round(epoch["samples_per_second"] * seconds)
        print(
            f"{args.series} series x {args.years} years, {ranks} {'process' if ranks == 1 else 'ranks'}: "
            f"epoch {seconds:.1f} s ({epoch['samples_per_second']:,.0f} samples/s), run {wall:.0f} s, peak memory "
            f"{mem.peak_pss_kib / 1024:,.0f} MiB PSS in all, largest process {mem.peak_rss_kib / 1024:,.0f} MiB RSS"
        )
    (_, e1, m1, _), (_, e2, m2, _) = rows
    print(
        f"about {windows:,} training windows per epoch; 2 ranks / 1 process: epoch time {e2['seconds'] / e1['seconds']:.2f}, "
        f"memory (PSS) {m2.peak_pss_kib / m1.peak_pss_kib:.2f}"
    )


def main() -> None:
    if os.environ.get("BENCH_DDP_WORKER"):
        allreduce_worker()
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--series", type=int, default=50)
    ap.add_argument("--years", type=int, default=5)
    ap.add_argument("--skip-scale", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        throughput(args, tmp)
        allreduce(os.cpu_count() or 2)
        if not args.skip_scale:
            scale(args, tmp)


if __name__ == "__main__":
    main()
