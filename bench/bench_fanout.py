"""A walk-forward fanned out on the (emulated) cluster, against the same walk-forward in one process, and what
pooling many folds costs the operator; each figure next to a baseline measured in the same run.

Why: a walk-forward run is an Indexed Job, one pod per fold, which the operator pools into the run's status
(``trainop.folds``). Two questions: does the fan-out pay for its overhead (pod start-up, the API, the
operator), and does the operator stay cheap when a run has many folds (every fold's pod is watched, its
termination message parsed, the pooled metrics and one row per fold rewritten in the status)?

1. Fan-out: wall time of an 8-fold walk-forward of a tiny SOL spec (SOL only, hiddenSize 8, inputWindow 20, 2
   epochs; first-target days 2025-03-08..06-24 in 14-day folds, the last one 11 days), (a) sequentially in one
   process, ``python -m trainer backtest --walk-forward --spec F --start S --end E --refit-every R --json``,
   against (b) the same spec applied as a TrainingRun with ``walkForward.parallelism 2`` ("2 emulated nodes":
   two fold pods at once) on the API emulator (``tests/support/kubeemu``), with the real operator (``python -m
   trainop``), the toy kubelet running each pod as a local ``python -m trainer fold`` process and the real S3
   server (``tests/support/s3server``) for the folds' statistics, timed from ``kubectl apply`` to phase
   Succeeded. The pooled pinball of both is printed as a check that they did the same work. On a 2-core machine
   the two fold processes share the cores with the operator, the emulator and the S3 server (their CPU seconds
   are printed): the ratio there is a floor, not what two real nodes give. The one process and each pod train
   with one torch thread (``--threads``, ``--pod-threads``), as the e2e tests do: the model is tiny, and on a
   busy 2-core machine (others' tests running) one sequential run took 188 s with 2 threads against 21 s with 1
   (OpenMP threads waiting for cores that are busy elsewhere).
2. Aggregation: the operator's CPU and memory while it pools a 100-fold walk-forward (5-day folds over 500
   days). No kubelet: this script plays the Job controller and the kubelet, as
   ``tests/operator/test_integration_folds.py`` does -- the fold pods written through the API in waves of
   ``--aggregate-parallelism``, each Running and then terminated with a valid ``FoldStats`` termination
   message (built by ``trainer.fold_sums.fold_stats`` on random numbers), the Job's status after each wave,
   then Complete -- until the run is Succeeded with FOLDS 100/100. Printed: the operator's CPU seconds (utime +
   stime of ``/proc/<pid>/stat``) and per fold, its peak RSS (``VmRSS`` polled every 0.1 s, and ``VmHWM``),
   and the size of the run's status (``kubectl get -o json``); the baseline is the same operator idle (RSS,
   CPU over ``--idle`` seconds) just before the run's creation.

    python bench/bench_fanout.py [--parallelism 2] [--threads 1] [--pod-threads 1] [--skip-fanout]
    python bench/bench_fanout.py --skip-fanout [--folds 100] [--folds-every 5] [--aggregate-parallelism 10]

The operator runs with its production stall-sweep interval (``--timer-interval 30``), not the tests' 0.5 s.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.operator.test_integration import (  # noqa: E402
    RUNNING_POD,
    Operator,
    container,
    set_job_status,
    set_pod_status,
)
from tests.support.kubeemu.client import Api  # noqa: E402
from tests.support.kubeemu.fixtures import KubeApi  # noqa: E402
from tests.support.kubeemu.kubelet import Kubelet, trainer_pod_env  # noqa: E402
from tests.support.procs import stop_process  # noqa: E402
from tests.support.s3server import S3Server  # noqa: E402
from tests.support.trainer_helpers import trainer_env  # noqa: E402
from trainer.api.foldstats import FoldStats, pooled  # noqa: E402
from trainer.api.spec import WalkForwardSpec  # noqa: E402
from trainer.fold_sums import fold_stats  # noqa: E402

RUNS = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingruns"
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
HORIZON, QUANTILES = 7, [0.1, 0.5, 0.9]
TICK = os.sysconf("SC_CLK_TCK")


# --- processes: CPU and memory from /proc ------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (its own threads; children not included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class PeakRss(threading.Thread):
    """The peak VmRSS of one process, polled every 0.1 s until ``stop()``."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak_kib, self.done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            with contextlib.suppress(OSError):
                self.peak_kib = max(self.peak_kib, status_kib(self.pid, "VmRSS"))
            self.done.wait(0.1)

    def stop(self) -> int:
        self.done.set()
        self.join()
        return self.peak_kib


def children_cpu() -> float:
    """User + system CPU seconds of this process's reaped children so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def mib(kib: float) -> float:
    return kib / 1024


# --- the cluster: emulator, operator ----------------------------------------------------------------------


class Emulator:
    """``python -m tests.support.kubeemu.server --kubeconfig PATH`` (its pid kept, for its CPU seconds)."""

    def __init__(self, tmp: Path) -> None:
        self.kubeconfig = tmp / "kubeconfig"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "operator")))}
        self.log = open(tmp / "emulator.log", "wb")  # noqa: SIM115 (closed in close())
        cmd = [sys.executable, "-m", "tests.support.kubeemu.server", "--port", "0"]
        cmd += ["--kubeconfig", str(self.kubeconfig)]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, env=env)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("READY "):
            self.close()
            raise RuntimeError(f"the Kubernetes emulator did not start: {line!r} (log: {tmp}/emulator.log)")
        self.url = f"http://127.0.0.1:{int(line.split()[1])}"
        env = {"KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(tmp / "kube-cache")}
        self.kube = KubeApi(self.kubeconfig, env, real=False, url=self.url)
        self.api = Api(self.url)

    def namespace(self, name: str) -> str:
        body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        self.api.create("/api/v1/namespaces", body)
        return name

    def close(self) -> None:
        stop_process(self.proc, timeout=10)
        self.log.close()


@contextlib.contextmanager
def operator(emu: Emulator, ns: str, log: Path, timer_interval: float) -> Iterator[Operator]:
    op = Operator(emu.kube, ns, log)
    op.env["TRAINOP_TIMER_INTERVAL_SECONDS"] = str(timer_interval)
    op.start()
    try:
        yield op
    finally:
        op.stop()


def run_status(api: Api, ns: str, name: str) -> dict[str, Any]:
    return dict(api.get(f"{RUNS.format(ns=ns)}/{name}").get("status") or {})


def wait_finished(api: Api, ns: str, name: str, timeout: float, interval: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run_status(api, ns, name)
        if status.get("phase") in ("Succeeded", "Failed"):
            return status
        time.sleep(interval)
    raise TimeoutError(f"{ns}/{name} not finished after {timeout:.0f} s: {run_status(api, ns, name)}")


def pod_lifetimes(api: Api, ns: str) -> list[float]:
    """Seconds from start to exit of each terminated pod in ``ns`` (the kubelet's 1-s timestamps)."""
    out = []
    for pod in api.get(f"/api/v1/namespaces/{ns}/pods")["items"]:
        for c in (pod.get("status") or {}).get("containerStatuses") or []:
            if term := (c.get("state") or {}).get("terminated"):
                begin, end = (dt.datetime.fromisoformat(term[k]) for k in ("startedAt", "finishedAt"))
                out.append((end - begin).total_seconds())
    return out


def folds_column(emu: Emulator, ns: str, name: str) -> str:
    wide = emu.kube.kubectl("get", "tr", name, "-n", ns, "-o", "wide").stdout.splitlines()
    return wide[1][wide[0].index("FOLDS") :].split()[0]


def run_doc(name: str, wf: dict[str, Any], epochs: int = 2) -> dict[str, Any]:
    """The tiny SOL spec of tests/test_e2e_walkforward.py ``run_doc``, with ``wf`` as its walkForward."""
    return {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": {
            "symbol": "SOL",
            "model": {"hiddenSize": 8, "attentionHeads": 2},
            "data": {"inputWindow": 20},
            "training": {"epochs": epochs, "device": "cpu"},
            "walkForward": {"backoffLimitPerIndex": 2, **wf},
            "resources": {"limits": {"memory": "2Gi"}},
            "tolerations": [],
        },
    }


def fold_windows(wf: dict[str, Any]) -> list[tuple[dt.date, dt.date]]:
    spec = WalkForwardSpec(start=wf["start"], end=wf["end"], refit_every=wf["refitEvery"])
    return spec.folds(HORIZON)


# --- 1. fan-out against one process -----------------------------------------------------------------------


def bench_fanout(emu: Emulator, tmp: Path, args: argparse.Namespace) -> None:
    wf = {"start": args.start, "end": args.end, "refitEvery": args.refit_every}
    folds = len(fold_windows(wf))
    name, ns = "sol-wf", emu.namespace("bench-fanout")
    spec_path = tmp / "wf.yaml"
    spec_path.write_text(yaml.safe_dump(run_doc(name, {**wf, "parallelism": args.parallelism})))

    cmd = [sys.executable, "-m", "trainer", "backtest", "--walk-forward", "--spec", str(spec_path)]
    cmd += ["--start", args.start, "--end", args.end, "--refit-every", args.refit_every, "--json"]
    t0, c0 = time.perf_counter(), children_cpu()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=trainer_env({"OMP_NUM_THREADS": str(args.threads)}), cwd=ROOT
    )
    sequential, sequential_cpu = time.perf_counter() - t0, children_cpu() - c0
    if proc.returncode != 0:
        raise RuntimeError(f"backtest --walk-forward failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    local = json.loads(proc.stdout)
    assert len(local["folds"]) == folds, (len(local["folds"]), folds)
    trainings = sum(f["train_seconds"] for f in local["folds"])

    s3 = S3Server(tmp / "s3")
    s3.start()
    try:
        bucket = s3.create_bucket()
        run = run_doc(name, {**wf, "parallelism": args.parallelism})
        run["spec"]["checkpoint"] = {"uri": f"s3://{bucket}/{ns}/{name}", "s3Endpoint": s3.endpoint}
        run["spec"]["s3CredentialsSecret"] = {"name": "s3-creds"}
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s3-creds"},
            "stringData": {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key},
        }
        path = tmp / "wf-cluster.yaml"
        path.write_text(yaml.safe_dump_all([secret, run]))
        threads = str(args.pod_threads)
        env = trainer_pod_env(str(emu.kubeconfig), OMP_NUM_THREADS=threads)
        with (
            operator(emu, ns, tmp / "operator-fanout.log", args.timer_interval) as op,
            Kubelet(emu.api, tmp / "kubelet", extra_env=env, namespace=ns),
        ):
            assert op.proc is not None and s3.proc is not None
            pids = {"operator": op.proc.pid, "emulator": emu.proc.pid, "S3 server": s3.proc.pid}
            cpu0 = {k: cpu_seconds(p) for k, p in pids.items()}
            t0, c0 = time.perf_counter(), children_cpu()
            emu.kube.kubectl("apply", "-n", ns, "-f", str(path))
            status = wait_finished(emu.api, ns, name, timeout=args.timeout, interval=0.25)
            fanned = time.perf_counter() - t0
            pods_cpu = children_cpu() - c0  # the fold processes, reaped by the kubelet (and one kubectl)
            cpu = {k: cpu_seconds(p) - cpu0[k] for k, p in pids.items()}
            lifetimes = pod_lifetimes(emu.api, ns)
            if status["phase"] != "Succeeded":
                raise RuntimeError(f"the fanned-out run failed: {status}\n{op.log()[-3000:]}")
            column = folds_column(emu, ns, name)
    finally:
        s3.close()
    stats = [FoldStats.model_validate(f["stats"]) for f in status["folds"]]
    cluster = pooled(stats)

    print(
        f"1. fan-out, {folds}-fold walk-forward of the tiny SOL spec ({args.start}..{args.end}, refit "
        f"{args.refit_every}, 2 epochs):\n"
        f"   sequential, one process ({args.threads} thread(s)): {sequential:6.1f} s wall, "
        f"CPU {sequential_cpu:.1f} s (trainings {trainings:.1f} s; pooled pinball {local['pinball']:.6f})\n"
        f"   fanned out, parallelism {args.parallelism} ({threads} thread(s) per pod), apply -> Succeeded: "
        f"{fanned:6.1f} s wall (FOLDS {column}; pooled pinball {cluster['pinball']:.6f})\n"
        f"     {len(lifetimes)} pods: CPU {pods_cpu:.1f} s in all, lifetimes {sum(lifetimes):.0f} s in all "
        f"(mean {sum(lifetimes) / max(1, len(lifetimes)):.1f} s, 1-s timestamps), trainings "
        f"{sum(f.train_seconds for f in stats):.1f} s\n"
        f"   ratio fanned/sequential {fanned / sequential:.2f} (speed-up x{sequential / fanned:.2f}); "
        f"CPU beside the folds: "
        + ", ".join(f"{k} {v:.1f} s" for k, v in cpu.items())
        + f"\n   ({os.cpu_count()} cores: the {args.parallelism} fold processes compete with the operator, the "
        "emulator and the S3 server for them)"
    )


# --- 2. the operator pooling 100 folds ----------------------------------------------------------------------


def random_fold(rng: np.random.Generator, index: int, window: tuple[dt.date, dt.date]) -> FoldStats:
    """Fold ``index``'s sums of random forecasts: one window per first-target day, prices near 150."""
    n = (window[1] - window[0]).days + 1
    last_close = 150.0 * np.exp(rng.normal(0, 0.05, n))
    actual = last_close[:, None] * np.exp(np.cumsum(rng.normal(0, 0.04, (n, HORIZON)), axis=1))

    def forecaster(spread: float) -> np.ndarray:
        median = last_close[:, None] * np.exp(rng.normal(0, 0.01, (n, HORIZON)))
        width = spread * np.sqrt(np.arange(1, HORIZON + 1))[None, :]
        return np.stack([median * np.exp(-width), median, median * np.exp(width)], axis=-1)

    return fold_stats(
        forecaster(0.05),
        actual,
        last_close,
        QUANTILES,
        {"empirical": forecaster(0.06), "ewma": forecaster(0.055), "garch": forecaster(0.052)},
        index=index,
        start=window[0].isoformat(),
        end=window[1].isoformat(),
        median="learned",
        band="learned",
        epochs=int(rng.integers(5, 60)),
        train_seconds=float(rng.uniform(10, 100)),
    )


def fold_pod(api: Api, ns: str, job: dict[str, Any], index: int) -> str:
    """Fold ``index``'s pod as the Job controller creates it (completion index label and annotation, owner)."""
    name = f"{job['metadata']['name']}-{index}-b{index:03d}x"
    labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": job["metadata"]["name"]}
    labels[INDEX_KEY] = str(index)
    owner = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": job["metadata"]["name"],
        "uid": job["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    meta = {
        "name": name,
        "labels": labels,
        "annotations": {INDEX_KEY: str(index)},
        "ownerReferences": [owner],
    }
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": job["spec"]["template"]["spec"]}
    api.create(f"/api/v1/namespaces/{ns}/pods", pod)
    set_pod_status(api, ns, name, RUNNING_POD)
    return name


def terminated(message: str) -> dict[str, Any]:
    term = {
        "exitCode": 0,
        "reason": "Completed",
        "message": message,
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T01:00:00Z",
    }
    return {"phase": "Succeeded", **container({"terminated": term})}


def indexes(done: int) -> str:
    return "" if done == 0 else ("0" if done == 1 else f"0-{done - 1}")


def settle(pid: int, quiet: float = 2.0, limit: float = 30.0) -> None:
    """Until ``pid`` used under 10 ms of CPU in ``quiet`` seconds (its trailing work done), at most ``limit``."""
    deadline = time.monotonic() + limit
    before = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now - before < 0.01:
            return
        before = now


def bench_aggregate(emu: Emulator, tmp: Path, args: argparse.Namespace) -> None:
    last = dt.date.fromisoformat(args.end) - dt.timedelta(days=HORIZON - 1)
    start = last - dt.timedelta(days=args.folds * args.folds_every - 1)
    wf = {
        "start": start.isoformat(),
        "end": args.end,
        "refitEvery": f"{args.folds_every}d",
        "parallelism": args.aggregate_parallelism,
    }
    windows = fold_windows(wf)
    total = len(windows)
    rng = np.random.default_rng(args.seed)
    messages = [random_fold(rng, i, w).message() for i, w in enumerate(windows)]
    name, ns = "sol-wf100", emu.namespace("bench-aggregate")
    api = emu.api
    with operator(emu, ns, tmp / "operator-aggregate.log", args.timer_interval) as op:
        assert op.proc is not None
        pid = op.proc.pid
        settle(pid)
        idle_rss, c0, t0 = status_kib(pid, "VmRSS"), cpu_seconds(pid), time.perf_counter()
        time.sleep(args.idle)
        idle_cpu, idle_wall = cpu_seconds(pid) - c0, time.perf_counter() - t0
        idle_rss = max(idle_rss, status_kib(pid, "VmRSS"))

        peak = PeakRss(pid)
        peak.start()
        c0, e0, t0 = cpu_seconds(pid), cpu_seconds(emu.proc.pid), time.perf_counter()
        api.create(RUNS.format(ns=ns), run_doc(name, wf))
        job_path = f"/apis/batch/v1/namespaces/{ns}/jobs/{name}-train"
        deadline = time.monotonic() + 60
        while (job := api.maybe_get(job_path)) is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no Job {name}-train after 60 s:\n{op.log()[-3000:]}")
            time.sleep(0.1)
        assert job["spec"]["completions"] == total, job["spec"]["completions"]
        wave = args.aggregate_parallelism
        for first in range(0, total, wave):
            batch = range(first, min(first + wave, total))
            pods = [fold_pod(api, ns, job, i) for i in batch]
            set_job_status(
                api,
                ns,
                f"{name}-train",
                {"active": len(pods), "succeeded": first, "completedIndexes": indexes(first)},
            )
            for pod, i in zip(pods, batch, strict=True):
                set_pod_status(api, ns, pod, terminated(messages[i]))
            done = batch.stop
            set_job_status(
                api, ns, f"{name}-train", {"active": 0, "succeeded": done, "completedIndexes": indexes(done)}
            )
        complete = {
            "type": "Complete",
            "status": "True",
            "reason": "CompletionsReached",
            "message": "Reached expected number of succeeded pods",
            "lastTransitionTime": "2026-01-01T01:00:05Z",
        }
        final = {"succeeded": total, "completedIndexes": indexes(total), "conditions": [complete]}
        set_job_status(api, ns, f"{name}-train", final)
        written = time.perf_counter() - t0
        status = wait_finished(api, ns, name, timeout=args.timeout, interval=0.25)
        wall = time.perf_counter() - t0
        if status["phase"] != "Succeeded":
            raise RuntimeError(f"the 100-fold run failed: {status}\n{op.log()[-3000:]}")
        settle(pid)
        cpu, span = cpu_seconds(pid) - c0, time.perf_counter() - t0
        emu_cpu = cpu_seconds(emu.proc.pid) - e0
        peak_rss, hwm = peak.stop(), status_kib(pid, "VmHWM")
        column = folds_column(emu, ns, name)
        obj = json.loads(emu.kube.kubectl("get", "tr", name, "-n", ns, "-o", "json").stdout)
        traceback = "Traceback" in op.log()
    status_bytes = len(json.dumps(obj["status"], separators=(",", ":")).encode())
    object_bytes = len(json.dumps(obj, separators=(",", ":")).encode())
    rows = obj["status"]["folds"]
    assert len(rows) == total and all(r["phase"] == "Succeeded" for r in rows), status.get("message")
    expected = pooled([FoldStats.model_validate_json(m) for m in messages])
    net = cpu - idle_cpu / idle_wall * span

    print(
        f"2. the operator pooling a {total}-fold walk-forward ({wf['start']}..{args.end}, refit "
        f"{wf['refitEvery']}; pods in waves of {wave}, no kubelet), created -> Succeeded in {wall:.1f} s "
        f"(the last pod and Job status written at {written:.1f} s; FOLDS {column}; "
        f"pinball {status['metrics']['pinball']} vs {expected['pinball']:.4g} pooled here"
        f"{'; Traceback in its log!' if traceback else ''}):\n"
        f"   idle baseline ({idle_wall:.0f} s):  RSS {mib(idle_rss):.1f} MiB, CPU {idle_cpu:.2f} s "
        f"({idle_cpu / idle_wall * 1000:.1f} ms/s)\n"
        f"   pooling {total} folds ({span:.1f} s):  CPU {cpu:.2f} s ({net:.2f} s over idle), "
        f"{net / total * 1000:.1f} ms per fold; peak RSS {mib(peak_rss):.1f} MiB (VmHWM "
        f"{mib(hwm):.1f} MiB, {mib(peak_rss - idle_rss):+.1f} MiB over idle)\n"
        f"   status {status_bytes / 1024:.1f} KiB ({status_bytes / total:.0f} B per fold; whole object "
        f"{object_bytes / 1024:.1f} KiB); the emulator's CPU meanwhile {emu_cpu:.2f} s"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--start", default="2025-03-08", help="fan-out: first target day of the first fold")
    ap.add_argument("--end", default="2025-06-30", help="last day of candles used (both parts)")
    ap.add_argument("--refit-every", default="14d", help="fan-out: days per fold")
    ap.add_argument("--threads", type=int, default=1, help="fan-out: torch threads of the sequential run")
    ap.add_argument("--pod-threads", type=int, default=1, help="fan-out: torch threads of each fold pod")
    ap.add_argument("--parallelism", type=int, default=2, help="fan-out: folds at once on the emulator")
    ap.add_argument("--folds", type=int, default=100, help="aggregation: folds of the walk-forward")
    ap.add_argument("--folds-every", type=int, default=5, help="aggregation: days per fold")
    ap.add_argument("--aggregate-parallelism", type=int, default=10, help="aggregation: pods per wave")
    ap.add_argument("--idle", type=float, default=10.0, help="aggregation: seconds of the idle baseline")
    ap.add_argument("--timer-interval", type=float, default=30.0, help="the operator's stall sweep, seconds")
    ap.add_argument("--timeout", type=float, default=1200.0, help="seconds to wait for a run to finish")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-fanout", action="store_true")
    ap.add_argument("--skip-aggregate", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as name:
        tmp = Path(name)
        emu = Emulator(tmp)
        try:
            emu.kube.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
            deadline = time.monotonic() + 30
            while emu.api.maybe_get("/apis/cryptopredictor.dev/v1alpha1/trainingruns") is None:
                if time.monotonic() > deadline:
                    raise TimeoutError("the CRD is not served after 30 s")
                time.sleep(0.1)
            if not args.skip_fanout:
                bench_fanout(emu, tmp, args)
            if not args.skip_aggregate:
                bench_aggregate(emu, tmp, args)
        finally:
            emu.close()


if __name__ == "__main__":
    main()
