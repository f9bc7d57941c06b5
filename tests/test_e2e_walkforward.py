"""End to end, a walk-forward on the cluster: kubectl apply a 4-fold walk-forward TrainingRun -> operator -> Indexed
Job (one pod per fold, 2 at a time) -> real trainer processes (``python -m trainer fold``) -> termination
messages -> the operator pools them -> Succeeded, with pooled metrics equal to the local
``backtest --walk-forward`` for the same spec and data; killing one fold's process reruns only that index.

Against the emulator the kubelet harness runs each pod as a local process and hands its termination message back
(its documented shim for ``terminationMessagePath``). With KUBECONFIG set the same test runs on a real cluster
(the E2E_* variables of tests/test_e2e.py).
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import subprocess
import sys
from contextlib import ExitStack
from typing import Any

import pytest
import yaml

from tests.operator.test_integration import Operator, condition
from tests.support.cluster import Storage, operator_and_kubelet
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.trainer_helpers import ROOT, trainer_env
from tests.support.waiting import wait_for
from trainer.api.foldstats import FoldStats, pooled

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

START, END, REFIT = (
    "2025-05-05",
    "2025-06-30",
    "13d",
)  # first-target days 05-05..06-24: 4 folds (13, 13, 13, 12)
NAME = "sol-wf"


def run_doc(store: Storage | None = None, ns: str = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "symbol": "SOL",
        "model": {"hiddenSize": 8, "attentionHeads": 2},
        "data": {"inputWindow": 20},
        "training": {"epochs": 2, "device": "cpu"},
        "walkForward": {
            "start": START,
            "end": END,
            "refitEvery": REFIT,
            "parallelism": 2,
            "backoffLimitPerIndex": 2,
        },
        "resources": {"limits": {"memory": "2Gi"}},
        "tolerations": [],
    }
    if store is not None:
        spec["checkpoint"] = {"uri": f"s3://{store.bucket}/{ns}/{NAME}", "s3Endpoint": store.endpoint}
        spec["s3CredentialsSecret"] = {"name": "s3-creds"}
    return {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": NAME},
        "spec": spec,
    }


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The local CLI's walk-forward of the same spec and data: the numbers the cluster must reproduce."""
    path = tmp_path_factory.mktemp("local") / "wf.yaml"
    path.write_text(yaml.safe_dump(run_doc()))
    cmd = [sys.executable, "-m", "trainer", "backtest", "--walk-forward", "--spec", str(path)]
    cmd += ["--start", START, "--end", END, "--refit-every", REFIT, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=trainer_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: dict[str, Any] = json.loads(proc.stdout)
    assert len(out["folds"]) == 4
    return out


def assert_same_metrics(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("n", "mae", "mase", "pinball", "coverage_80", "width", "rmse", "mape", "da_h1", "da_h7"):
        assert math.isclose(a[key], b[key], rel_tol=1e-9), (key, a[key], b[key])
    for name, base in b["baselines"].items():
        for key, value in base.items():
            assert math.isclose(a["baselines"][name][key], value, rel_tol=1e-9), (name, key)


def test_four_folds_fan_out_pool_like_the_cli_and_a_killed_fold_reruns_alone(
    kube_api: KubeApi,
    kube_namespace: str,
    request: pytest.FixtureRequest,
    tmp_path: pathlib.Path,
    local: dict[str, Any],
) -> None:
    ns, store = kube_namespace, Storage(kube_api, request)
    kube_api.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
    secret = store.secret_manifest()
    run = run_doc(store, ns)
    if kube_api.real:
        run["spec"]["image"] = os.environ["E2E_TRAINER_IMAGE"]
    path = tmp_path / "wf.yaml"
    path.write_text(yaml.safe_dump_all([secret, run]))
    with ExitStack() as stack:
        op = Operator(kube_api, ns, tmp_path / "operator.log")
        kubelet = operator_and_kubelet(stack, kube_api, op, ns, tmp_path / "kubelet")
        kube_api.kubectl("apply", "-n", ns, "-f", str(path))
        job = f"{NAME}-train"
        if kubelet is not None:  # kill fold 1's process once it runs: only index 1 must run again
            k = kubelet
            pod = wait_for("fold 1 running", lambda: k.pods_by_index(job).get(1), timeout=300)
            k.kill(str(pod))

        def finished() -> dict[str, Any] | None:
            out = kube_api.kubectl("get", "tr", NAME, "-n", ns, "-o", "yaml").stdout
            s = dict(yaml.safe_load(out).get("status") or {})
            return s if s.get("phase") in ("Succeeded", "Failed") else None

        status: dict[str, Any] = wait_for(f"{NAME} to finish", finished, timeout=1200, interval=1.0)
        logs = ""
        if kubelet is not None:
            logs = "\n".join(p.read_text()[-1500:] for p in sorted(kubelet.workdir.glob(f"{job}-*.log")))
        assert status["phase"] == "Succeeded", f"{status}\n{logs}\n{op.log()[-3000:]}"
        wide = kube_api.kubectl("get", "tr", NAME, "-n", ns, "-o", "wide").stdout.splitlines()

    assert condition(status, "Succeeded")["status"] == "True"
    folds = sorted(status["folds"], key=lambda f: f["index"])
    assert [f["phase"] for f in folds] == ["Succeeded"] * 4
    cluster = pooled([FoldStats.model_validate(f["stats"]) for f in folds])
    assert_same_metrics(cluster, local)  # the operator's pooling of the pods = the CLI's walk-forward
    assert math.isclose(status["metrics"]["valMase"], local["mase"], rel_tol=1e-3)  # rounded to 4 digits
    assert math.isclose(status["metrics"]["pinball"], local["pinball"], rel_tol=1e-3)
    at = wide[0].index("FOLDS")
    assert wide[1][at:].split()[0] == "4/4", "\n".join(wide)
    keys = store.keys(f"{ns}/{NAME}/folds/")
    assert {f"{ns}/{NAME}/folds/{i:03d}.json" for i in range(4)} <= keys, sorted(keys)
    if kubelet is not None:  # index 1 ran twice, every other index once
        runs: dict[int, int] = {}
        for p in kubelet.workdir.glob(f"{job}-*.log"):
            index = int(p.name.removeprefix(f"{job}-").split("-")[0])
            runs[index] = runs.get(index, 0) + 1
        assert runs == {0: 1, 1: 2, 2: 1, 3: 1}, runs
