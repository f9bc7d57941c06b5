"""End to end, a hyper-parameter sweep on the cluster: kubectl apply a 4-trial grid TrainingSweep -> operator ->
child TrainingRuns ``<sweep>-t000..t003`` (2 at a time) -> Jobs -> real trainer processes -> checkpoints in S3 and
``status.metrics`` on each run -> the sweep's leaderboard and best -> Succeeded, while the operator process is
killed (SIGKILL or SIGTERM) and restarted at once five times over the sweep's life.

Unlike tests/operator/test_integration_sweep.py (which fakes the children's completions), every objective here is
what a trainer measured and every checkpoint URI one a trainer wrote. Against the emulator the kubelet harness runs
each pod as a local process; with KUBECONFIG set the same test runs on a real cluster (the E2E_* variables of
tests/test_e2e.py).

The objective ties: a 2-epoch model of 8-16 units never beats persistence significantly, so every trial ships the
persistence median and its valMase is exactly 1.0 (trainer/calibrate.py). The leaderboard is then ordered by the
tie-break (the earlier trial first); the assertions hold for whatever the trainers measured.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
import yaml

from tests.operator.test_integration import Operator, condition
from tests.support.cluster import Storage
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.kubeemu.kubelet import Kubelet, trainer_pod_env
from tests.support.trainer_helpers import ROOT
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

NAME = "tiny-grid"
SWEEP_LABEL = "cryptopredictor.dev/sweep"
PARAMS_ANNOTATION = "cryptopredictor.dev/trial-params"
LEARNING_RATES, HIDDEN_SIZES = [0.003, 0.01], [8, 16]
TRIALS = [f"{NAME}-t{k:03d}" for k in range(4)]
#: Grid order: the last parameter varies fastest.
POINTS = [{"training.learningRate": lr, "model.hiddenSize": h} for lr in LEARNING_RATES for h in HIDDEN_SIZES]
PARALLELISM = 2
DONE = ("Succeeded", "Failed")


def sweep_doc(store: Storage, ns: str) -> dict[str, Any]:
    template: dict[str, Any] = {
        "symbol": "SOL",
        "symbols": None,
        "model": {"hiddenSize": 8, "attentionHeads": 2},
        "data": {"inputWindow": 20},
        "training": {"epochs": 2, "device": "cpu"},
        "checkpoint": {"uri": f"s3://{store.bucket}/{ns}/{NAME}", "s3Endpoint": store.endpoint},
        "s3CredentialsSecret": {"name": "s3-creds"},
        "resources": {"limits": {"memory": "2Gi"}},
        "tolerations": [],
    }
    return {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingSweep",
        "metadata": {"name": NAME},
        "spec": {
            "algorithm": "grid",
            "parallelism": PARALLELISM,
            "objective": {"metric": "valMase", "direction": "minimize"},
            "parameters": [
                {"path": "training.learningRate", "values": LEARNING_RATES},
                {"path": "model.hiddenSize", "values": HIDDEN_SIZES},
            ],
            "template": template,
        },
    }


class Sweep:
    """The operator (restartable), the kubelet (emulator only) and kubectl reads of the sweep and its runs."""

    def __init__(self, kube: KubeApi, ns: str, tmp: pathlib.Path, stack: ExitStack) -> None:
        self.kube, self.ns, self.tmp = kube, ns, tmp
        self.op = Operator(kube, ns, tmp / "operator.log")
        self.op.start()
        stack.callback(self.op.stop)
        self.kubelet: Kubelet | None = None
        if not kube.real:
            env = trainer_pod_env(kube.env["KUBECONFIG"], OMP_NUM_THREADS="1")
            self.kubelet = stack.enter_context(
                Kubelet(kube.api, tmp / "kubelet", extra_env=env, namespace=ns)
            )
        self.kills: list[tuple[str, str]] = []  # (signal, milestone)
        self.most_unfinished = 0  # children not finished at once, at most, over every poll

    def get(self, *args: str) -> dict[str, Any]:
        return dict(json.loads(self.kube.kubectl("get", *args, "-n", self.ns, "-o", "json").stdout))

    def status(self) -> dict[str, Any]:
        return dict(self.get("tsw", NAME).get("status") or {})

    def children(self) -> dict[str, dict[str, Any]]:
        runs = self.get("tr", "-l", f"{SWEEP_LABEL}={NAME}")["items"]
        found = {r["metadata"]["name"]: r for r in runs}
        unfinished = sum(1 for r in found.values() if phase(r) not in DONE)
        self.most_unfinished = max(self.most_unfinished, unfinished)
        return found

    def succeeded(self) -> int:
        return sum(1 for r in self.children().values() if phase(r) == "Succeeded")

    def restart(self, sig: signal.Signals, milestone: str) -> None:
        """Kill the operator (SIGKILL: nothing finishes; SIGTERM: kopf's shutdown) and start a new one at once."""
        proc = self.op.proc
        assert proc is not None and proc.poll() is None, (
            f"the operator died on its own\n{self.op.log()[-3000:]}"
        )
        proc.send_signal(sig)
        try:
            proc.wait(20)
        finally:
            self.op.stop()  # SIGKILL if a SIGTERM did not end it
        self.kills.append((sig.name, milestone))
        self.op.start()

    def at(self, milestone: str, reached: Callable[[], bool], sig: signal.Signals, timeout: float) -> None:
        wait_for(milestone, lambda: reached() or None, timeout=timeout, interval=0.3, log=self.op.log_path)
        self.restart(sig, milestone)

    def logs(self) -> str:
        if self.kubelet is None:
            return ""
        pods = sorted(self.kubelet.workdir.glob(f"{NAME}-t*-train-*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in pods)


def phase(run: dict[str, Any]) -> str:
    return str((run.get("status") or {}).get("phase") or "")


def test_a_grid_sweep_of_real_trainings_survives_five_operator_kills(
    kube_api: KubeApi, kube_namespace: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    ns, store = kube_namespace, Storage(kube_api, request)
    for crd in ("crd.yaml", "crd-sweep.yaml"):
        kube_api.kubectl("apply", "-f", str(ROOT / "manifests" / crd))
    wait_for("the TrainingSweep CRD to be served", lambda: kube_api.kubectl("get", "tsw", "-n", ns))
    secret = store.secret_manifest()
    sweep = sweep_doc(store, ns)
    if kube_api.real:
        sweep["spec"]["template"]["image"] = os.environ["E2E_TRAINER_IMAGE"]
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump_all([secret, sweep]))

    with ExitStack() as stack:
        c = Sweep(kube_api, ns, tmp_path, stack)
        kube_api.kubectl("apply", "-n", ns, "-f", str(path))
        # Five kills, spread over the sweep: as the first trials are recorded (their runs being created), while
        # they train (the trainers patching their runs' status), as the first finishes (the next trial being
        # recorded), as the third finishes, and as the last one does (the sweep about to complete).
        c.at("the first trial recorded", lambda: bool(c.status().get("trials")), signal.SIGKILL, timeout=60)
        c.at(
            "a trainer's first epoch",
            lambda: any(
                phase(r) in DONE or ((r.get("status") or {}).get("progress") or {}).get("epoch")
                for r in c.children().values()
            ),
            signal.SIGTERM,
            timeout=120,
        )
        c.at("1 trial succeeded", lambda: c.succeeded() >= 1, signal.SIGKILL, timeout=120)
        c.at("3 trials succeeded", lambda: c.succeeded() >= 3, signal.SIGTERM, timeout=120)
        c.at("4 trials succeeded", lambda: c.succeeded() >= 4, signal.SIGKILL, timeout=90)

        def finished() -> dict[str, Any] | None:
            s = c.status()
            return s if s.get("phase") in DONE else None

        status: dict[str, Any] = wait_for(f"{NAME} to finish", finished, timeout=60, interval=0.5)
        assert status["phase"] == "Succeeded", f"{status}\n{c.logs()}\n{c.op.log()[-4000:]}"
        children = c.children()
        table = kube_api.kubectl("get", "tsw", "-n", ns).stdout.splitlines()
        events = c.get("events", "--field-selector", f"involvedObject.name={NAME}")["items"]
        assert c.op.proc is not None and c.op.proc.poll() is None, c.op.log()[-3000:]

    assert [sig for sig, _ in c.kills] == ["SIGKILL", "SIGTERM", "SIGKILL", "SIGTERM", "SIGKILL"], c.kills
    assert c.most_unfinished <= PARALLELISM, "more trial runs unfinished at once than parallelism"
    assert condition(status, "Succeeded")["status"] == "True"

    # Exactly the four trials, each a Succeeded run of its grid point with its checkpoints in S3.
    assert sorted(children) == TRIALS, sorted(children)
    metrics: dict[str, dict[str, Any]] = {}
    for name, point in zip(TRIALS, POINTS, strict=True):
        run = children[name]
        meta, s = run["metadata"], run.get("status") or {}
        assert phase(run) == "Succeeded", (name, s)
        assert meta["labels"][SWEEP_LABEL] == NAME
        assert meta["ownerReferences"][0]["kind"] == "TrainingSweep"
        assert json.loads(meta["annotations"][PARAMS_ANNOTATION]) == point
        assert run["spec"]["training"]["learningRate"] == point["training.learningRate"]
        assert run["spec"]["model"]["hiddenSize"] == point["model.hiddenSize"]
        prefix = f"{ns}/{NAME}/{name}/"
        assert run["spec"]["checkpoint"]["uri"] == f"s3://{store.bucket}/{prefix}".rstrip("/")
        assert s["checkpoint"]["best"] == f"s3://{store.bucket}/{prefix}best.pt", s["checkpoint"]
        keys = store.keys(prefix)
        for key in ("best.pt", "last.pt", "latest.json", "metrics.json", "config.json"):
            assert prefix + key in keys, sorted(keys)
        # What the trainer itself read: the trial's values, not the template's.
        body = store.client().get_object(Bucket=store.bucket, Key=prefix + "config.json")["Body"].read()
        trained = json.loads(body)["spec"]
        assert trained["training"]["learningRate"] == point["training.learningRate"]
        assert trained["model"]["hiddenSize"] == point["model.hiddenSize"]
        assert s["metrics"]["valMase"] > 0
        metrics[name] = s["metrics"]
    # The models' sizes follow hiddenSize alone.
    size: dict[int, set[int]] = {h: set() for h in HIDDEN_SIZES}
    for name, point in zip(TRIALS, POINTS, strict=True):
        size[int(point["model.hiddenSize"])].add(metrics[name]["parameters"])
    assert all(len(v) == 1 for v in size.values()) and min(size[8]) < min(size[16]), size

    # The sweep's record of its trials, its leaderboard and its best: the runs' real numbers.
    assert [(t["index"], t["name"], t["phase"]) for t in status["trials"]] == [
        (k, n, "Succeeded") for k, n in enumerate(TRIALS)
    ]
    for t in status["trials"]:
        assert t["objective"] == metrics[t["name"]]["valMase"]
        assert t["checkpoint"] == children[t["name"]]["status"]["checkpoint"]["best"]
        assert t["params"] == POINTS[t["index"]]
    ranked = sorted(TRIALS, key=lambda n: (metrics[n]["valMase"], TRIALS.index(n)))  # ties: the earlier first
    board = status["leaderboard"]
    assert [(e["rank"], e["name"]) for e in board] == list(enumerate(ranked, start=1)), board
    for e in board:
        assert e["objective"] == metrics[e["name"]]["valMase"]
        assert e["checkpoint"] == children[e["name"]]["status"]["checkpoint"]["best"]
        assert e["params"] == POINTS[e["index"]] and e["index"] == TRIALS.index(e["name"])
    objectives = [e["objective"] for e in board]
    assert objectives == sorted(objectives)
    best = status["best"]
    assert best == {k: v for k, v in board[0].items() if k != "rank"}
    assert best["objective"] == min(m["valMase"] for m in metrics.values())
    assert best["checkpoint"] == f"s3://{store.bucket}/{ns}/{NAME}/{best['name']}/best.pt"
    assert (status["trialsDone"], status["trialsTotal"], status["running"]) == (4, 4, 0)

    # No trial was created twice, and each Job ran a single trainer: the restarts duplicated nothing.
    created = [e.get("message", "") for e in events if e.get("reason") == "TrialCreated"]
    assert len(created) == len(set(created)), created
    if c.kubelet is not None:
        pods = [p.name for p in c.kubelet.workdir.glob(f"{NAME}-t*-train-*.log")]
        assert sorted(p.rsplit("-", 1)[0] for p in pods) == [f"{n}-train" for n in TRIALS], pods

    assert table[0].split() == ["NAME", "TRIALS", "RUNNING", "BEST", "OBJECTIVE", "AGE"], table
    assert table[1].split()[:4] == [NAME, "4/4", "0", best["name"]], table
