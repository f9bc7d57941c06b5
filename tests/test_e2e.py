"""End to end: kubectl apply the sample -> operator -> Job -> trainer (a real process) -> checkpoints in S3 ->
status -> `kubectl get tr`; killing the trainer once makes the Job retry a pod that resumes from its checkpoint.

Against the emulator (default) the kubelet harness plays kubelet: it runs the Job's container command as a local
process with the Job's env (the S3 Secret resolved through the API). With KUBECONFIG pointing at a real cluster
(kind with the trainer image loaded, or a GPU cluster) the same test runs there: set E2E_TRAINER_IMAGE, and
E2E_S3_ENDPOINT / E2E_S3_BUCKET / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY for an S3 the pods can reach; the
operator still runs from this checkout, and the "kill" deletes the running pod instead.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
from contextlib import ExitStack
from typing import Any

import pytest
import yaml

from tests.operator.test_integration import Operator, condition, metric
from tests.support.cluster import Storage, operator_and_kubelet
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.kubeemu.kubelet import Kubelet
from tests.support.waiting import wait_for
from trainer.api.spec import API_GROUP, API_VERSION

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture()
def namespace(kube_namespace: str) -> str:
    return kube_namespace


def tr_status(kube_api: KubeApi, ns: str) -> dict[str, Any]:
    out = kube_api.kubectl("get", "tr", "sol-tft", "-n", ns, "-o", "yaml").stdout
    return dict(yaml.safe_load(out).get("status") or {})


def test_sample_run_end_to_end_with_a_killed_trainer(
    kube_api: KubeApi, namespace: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> None:
    store = Storage(kube_api, request)
    kube_api.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
    secret = store.secret_manifest()
    run = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())
    assert run["apiVersion"] == f"{API_GROUP}/{API_VERSION}"
    # The override: 3 epochs (so one can be lost to the kill), CPU, checkpoints on the S3 server.
    run["spec"]["training"].update({"epochs": 3, "device": "cpu"})
    run["spec"]["checkpoint"].update(
        {"uri": f"s3://{store.bucket}/{namespace}/sol-tft", "s3Endpoint": store.endpoint}
    )
    run["spec"]["s3CredentialsSecret"] = {"name": "s3-creds"}
    run["spec"]["resources"] = {"limits": {"memory": "2Gi"}}  # no GPU in the emulator or on kind
    run["spec"]["tolerations"] = []
    if kube_api.real:
        run["spec"]["image"] = os.environ["E2E_TRAINER_IMAGE"]
    path = tmp_path / "sol-run.yaml"
    path.write_text(yaml.safe_dump_all([secret, run]))

    with ExitStack() as stack:
        op = Operator(kube_api, namespace, tmp_path / "operator.log")
        kubelet = operator_and_kubelet(stack, kube_api, op, namespace, tmp_path / "kubelet", threads=2)
        kube_api.kubectl("apply", "-n", namespace, "-f", str(path))

        # Kill the trainer once its first checkpoint is in S3 and the run reports progress.
        prefix = f"{namespace}/sol-tft/"
        wait_for(
            "the first checkpoint in S3",
            lambda: f"{prefix}latest.json" in store.keys(prefix) or None,
            timeout=600,
        )
        first_pod = _kill_trainer(kube_api, namespace, kubelet)

        status = wait_for(
            "sol-tft to succeed",
            lambda: (
                ((s := tr_status(kube_api, namespace)).get("phase") in ("Succeeded", "Failed") and s) or None
            ),
            timeout=900,
            interval=1.0,
        )
        pods = [
            p.split("/")[-1]
            for p in kube_api.kubectl(
                "get", "pods", "-n", namespace, "-l", "job-name=sol-tft-train", "-o", "name"
            ).stdout.split()
        ]
        logs = "\n".join(kubelet.logs(p)[-2000:] for p in pods) if kubelet else ""
        assert status["phase"] == "Succeeded", f"{status}\n{logs}\n{op.log()[-3000:]}"
        metrics_text = op.metrics()

    assert status["restarts"] >= 1
    assert condition(status, "Succeeded")["status"] == "True"
    assert status["progress"]["epoch"] == 3 and status["progress"]["epochDisplay"] == "3/3"
    assert status["checkpoint"]["latest"].startswith(f"s3://{store.bucket}/{prefix}checkpoints/epoch-")
    assert status["metrics"]["valMase"] > 0 and 0 < status["metrics"]["coverage80"] <= 1
    keys = store.keys(prefix)
    for name in ("best.pt", "latest.json", "metrics.json", "config.json", "forecast.png", "last.pt"):
        assert prefix + name in keys, sorted(keys)
    if kubelet is not None:  # the retried pod resumed from the checkpoint the killed one wrote
        retried = [p for p in pods if p != first_pod]
        assert len(retried) == 1 and "resuming from s3://" in kubelet.logs(retried[0])
        assert '"event": "resume"' not in kubelet.logs(first_pod)
    assert metric(metrics_text, "trainingrun_phase", name="sol-tft", phase="Succeeded") == 1.0

    table = kube_api.kubectl("get", "tr", "-n", namespace).stdout.splitlines()
    assert table[0].split() == ["NAME", "SYMBOL", "PHASE", "EPOCH", "VAL-LOSS", "BEST", "AGE"]
    row = table[1].split()
    assert row[:4] == ["sol-tft", "SOL", "Succeeded", "3/3"]
    wide = kube_api.kubectl("get", "tr", "-n", namespace, "-o", "wide").stdout.splitlines()
    assert wide[0].split()[-5:] == ["MASE", "RESTARTS", "WORKERS", "FOLDS", "JOB"]


def _kill_trainer(kube_api: KubeApi, ns: str, kubelet: Kubelet | None) -> str:
    if kubelet is not None:
        pod = wait_for(
            "a running trainer pod", lambda: (kubelet.running_pods("sol-tft-train") or [None])[0], timeout=120
        )
        kubelet.kill(pod)
        return str(pod)
    out = kube_api.kubectl(
        "get", "pods", "-n", ns, "-l", "job-name=sol-tft-train", "-o", "name"
    ).stdout.split()
    subprocess.run(
        ["kubectl", "delete", "-n", ns, "--wait=false", *out], env={**os.environ, **kube_api.env}, check=True
    )
    return out[0]
