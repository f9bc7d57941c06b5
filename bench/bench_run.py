"""The whole default run (manifests/samples/sol-run.yaml, bundled data) on this machine: wall time and peak RSS.

Goal on 2 CPU cores: well under a minute and <= 500 MB peak RSS. The figure is the trainer's own wall time
(data, training, evaluation, artifacts) from metrics.json; peak RSS is this process's maximum resident set.

    python bench/bench_run.py [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time

import torch

from trainer.api.manifest import load_manifest
from trainer.run import RunOptions, run_training


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--manifest", default="manifests/samples/sol-run.yaml")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    name, spec = load_manifest(args.manifest)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        s = run_training(spec, RunOptions(name=name, output=out, interactive=False, report=False))
        wall = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    m = s["metrics"]
    print(
        f"{name}: {s['epochs_run']} epochs (best {s['best_epoch']}), wall {wall:.1f} s, peak RSS {rss_mb:.0f} MB, "
        f"MASE {m['mase']:.4f}, coverage80 {m['coverage_80']:.3f}, pinball {m['pinball']:.3f} "
        f"(baselines: "
        + ", ".join(f"{k} {b['pinball']:.3f}" for k, b in m["baselines"].items())
        + f"; median {s['median']['shipped']})"
    )


if __name__ == "__main__":
    main()
