"""Operator benchmarks against the Kubernetes API emulator (``tests/support/kubeemu``), on this machine.

Measures, with the real ``python -m trainop`` subprocess:

1. apply -> Job-created latency: TrainingRuns created one at a time; the time until a watch on Jobs sees the
   run's Job (p50/p99; goal p50 <= 0.5 s);
2. N TrainingRuns (default 1,000) created back to back: time until every run has ``status.jobName`` and the
   operator's RSS afterwards and at peak (goal <= 250 MB);
3. status patches per run per minute during training: the trainer's StatusReporter with its default throttle
   (10 s) and a fake clock, for several epoch durations (no cluster needed).

Usage: ``.venv/bin/python bench/bench_operator.py [--latency-runs 200] [--runs 1000] [--json out.json]``.
The emulator is a Python process too: on a 2-core machine the numbers include its CPU share.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402

from tests.support.kubeemu.client import Api  # noqa: E402
from tests.support.kubeemu.server import emulator_subprocess, write_kubeconfig  # noqa: E402
from tests.support.procs import stop_process  # noqa: E402
from trainer.status_report import StatusReporter  # noqa: E402

RUNS = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingruns"
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())


def rss_mb(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MB from /proc."""
    fields = {}
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class JobWatcher(threading.Thread):
    """Records when each Job first appears in a watch of the namespace."""

    def __init__(self, api: Api, namespace: str) -> None:
        super().__init__(daemon=True)
        self.api, self.namespace = api, namespace
        self.seen: dict[str, float] = {}
        self.cond = threading.Condition()
        self.stop = False

    def run(self) -> None:
        while not self.stop:
            for event in self.api.watch(f"/apis/batch/v1/namespaces/{self.namespace}/jobs", timeout=60):
                name = event["object"]["metadata"]["name"]
                with self.cond:
                    self.seen.setdefault(name, time.perf_counter())
                    self.cond.notify_all()

    def wait(self, name: str, timeout: float = 30) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: name in self.seen, timeout):
                raise TimeoutError(f"Job {name} did not appear within {timeout}s")
            return self.seen[name]


def run_body(name: str) -> dict[str, Any]:
    body = json.loads(json.dumps(SAMPLE))
    body["metadata"] = {"name": name}
    return dict(body)


def bench_latency(api: Api, namespace: str, count: int) -> dict[str, float]:
    watcher = JobWatcher(api, namespace)
    watcher.start()
    time.sleep(0.5)
    latencies = []
    for i in range(count):
        name = f"lat-{i:04d}"
        start = time.perf_counter()
        api.create(RUNS.format(ns=namespace), run_body(name))
        latencies.append(watcher.wait(f"{name}-train") - start)
    watcher.stop = True
    return {
        "runs": count,
        "p50_s": percentile(latencies, 0.5),
        "p99_s": percentile(latencies, 0.99),
        "mean_s": statistics.fmean(latencies),
        "max_s": max(latencies),
    }


def bench_scale(api: Api, namespace: str, count: int, pid: int) -> dict[str, float]:
    before = rss_mb(pid)[0]
    start = time.perf_counter()
    for i in range(count):
        api.create(RUNS.format(ns=namespace), run_body(f"scale-{i:04d}"))
    created = time.perf_counter() - start
    done = 0
    while True:
        items = api.get(RUNS.format(ns=namespace))["items"]
        done = sum(1 for r in items if (r.get("status") or {}).get("jobName"))
        if done >= count:
            break
        if time.perf_counter() - start > 1800:
            raise TimeoutError(f"only {done}/{count} runs reconciled after 30 min")
        time.sleep(2)
    reconciled = time.perf_counter() - start
    time.sleep(5)  # let timers and event posting settle
    rss, peak = rss_mb(pid)
    return {
        "runs": count,
        "create_s": created,
        "all_reconciled_s": reconciled,
        "rss_before_mb": before,
        "rss_after_mb": rss,
        "rss_peak_mb": peak,
    }


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def bench_patches(minutes: float = 30.0) -> dict[str, float]:
    """Patches per run per minute with the default throttle, for several epoch durations (fake clock)."""
    out = {}
    for epoch_seconds in (0.1, 1.0, 5.0, 30.0, 120.0):
        clock = FakeClock()
        sent: list[dict[str, Any]] = []
        reporter = StatusReporter(sent.append, throttle_seconds=10.0, clock=clock)
        epochs = int(minutes * 60 / epoch_seconds)
        for epoch in range(epochs):
            clock.now += epoch_seconds
            reporter.progress(epoch=epoch, total_epochs=epochs, train_loss=1.0, val_loss=1.0)
            reporter.checkpoint(latest=f"s3://b/e{epoch}.pt", best="s3://b/best.pt", epoch=epoch)
        reporter.final({"valMase": 1.0})
        out[f"epoch_{epoch_seconds:g}s"] = len(sent) / minutes
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--latency-runs", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"patches_per_run_per_minute": bench_patches()}
    with tempfile.TemporaryDirectory() as tmp, emulator_subprocess(pathlib.Path(tmp) / "emulator.log") as url:
        kubeconfig = write_kubeconfig(pathlib.Path(tmp) / "kubeconfig", url)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": f"{tmp}/cache"}
        subprocess.run(
            ["kubectl", "apply", "-f", str(ROOT / "manifests" / "crd.yaml")],
            env=env,
            check=True,
            capture_output=True,
        )
        api = Api(url)
        for ns in ("bench-lat", "bench-scale"):
            api.create(
                "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
            )
        port = 18000 + os.getpid() % 1000
        op_env = {
            **env,
            "PYTHONPATH": str(ROOT),
            "TRAINOP_NAMESPACES": "bench-lat,bench-scale",
            "TRAINOP_METRICS_HOST": "127.0.0.1",
            "TRAINOP_METRICS_PORT": str(port),
            "TRAINOP_CHECKPOINT_PREFIX": "s3://checkpoints/runs",
        }
        with open(pathlib.Path(tmp) / "operator.log", "wb") as log:
            op = subprocess.Popen(
                [sys.executable, "-m", "trainop"], env=op_env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                        break
                    except OSError:
                        if time.monotonic() > deadline or op.poll() is not None:
                            raise RuntimeError("operator did not start") from None
                        time.sleep(0.2)
                time.sleep(1)
                results["idle_rss_mb"] = rss_mb(op.pid)[0]
                if args.latency_runs:
                    results["apply_to_job_latency"] = bench_latency(api, "bench-lat", args.latency_runs)
                if args.runs:
                    results["scale"] = bench_scale(api, "bench-scale", args.runs, op.pid)
            finally:
                stop_process(op, timeout=30)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
