"""End to end without S3: an operator with no checkpoint prefix, no S3 endpoint and no S3 Secret -> the sample run
gets a PersistentVolumeClaim of its own -> the trainer checkpoints to pvc://... -> its pod is killed -> the retried
pod resumes from the claim -> Succeeded, and `kubectl describe tr` says where the checkpoints are -> deleting the
run deletes its claim.

Against the emulator the kubelet harness maps the claim to a local directory that outlives the pod (the test shim
of ``tests/support/kubeemu/volumes``). With KUBECONFIG naming a real cluster (kind: its default StorageClass
provisions the claim) set E2E_TRAINER_IMAGE; the "kill" deletes the running pod instead. Not run on a real
cluster by this project's CI.
"""

from __future__ import annotations

import json
import os
import pathlib
from contextlib import ExitStack
from typing import Any

import pytest
import yaml

from tests.operator.test_integration import Operator, condition
from tests.support.cluster import operator_and_kubelet
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.kubeemu.kubelet import Kubelet
from tests.support.waiting import wait_for
from tests.test_e2e import _kill_trainer, tr_status

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ROOT = pathlib.Path(__file__).resolve().parent
CLAIM, URI = "sol-tft-checkpoints", "pvc://sol-tft-checkpoints/sol-tft"


def tiny_sample(real: bool) -> dict[str, Any]:
    """The sample, small: one symbol, half a year of candles, hiddenSize 8, 4 epochs on the CPU; no
    checkpoint.uri, no S3 anywhere."""
    run = yaml.safe_load((ROOT.parent / "manifests" / "samples" / "sol-run.yaml").read_text())
    spec = run["spec"]
    spec["symbols"] = ["SOL"]
    spec["data"].update({"start": "2024-01-01", "end": "2024-06-30", "inputWindow": 30})
    spec["model"].update({"hiddenSize": 8, "attentionHeads": 2})
    spec["training"].update({"epochs": 4, "warmupEpochs": 1, "device": "cpu"})
    spec["checkpoint"] = {"uri": None, "keepLast": 2}
    spec["resources"] = {"limits": {"memory": "2Gi"}}  # no GPU in the emulator or on kind
    spec["tolerations"] = []
    if real:
        spec["image"] = os.environ["E2E_TRAINER_IMAGE"]
    return dict(run)


def operator_without_s3(kube_api: KubeApi, ns: str, log: pathlib.Path) -> Operator:
    op = Operator(kube_api, ns, log)
    for key in [k for k in op.env if k.startswith(("TRAINOP_CHECKPOINT_PREFIX", "TRAINOP_S3_", "AWS_"))]:
        del op.env[key]
    op.env["TRAINOP_STATUS_THROTTLE_SECONDS"] = "1"  # status.checkpoint soon after each checkpoint
    return op


def test_a_run_without_s3_checkpoints_to_its_own_claim_and_resumes_from_it(
    kube_api: KubeApi, kube_namespace: str, tmp_path: pathlib.Path
) -> None:
    ns = kube_namespace
    kube_api.kubectl("apply", "-f", str(ROOT.parent / "manifests" / "crd.yaml"))
    path = tmp_path / "sol-run.yaml"
    path.write_text(yaml.safe_dump(tiny_sample(kube_api.real)))
    with ExitStack() as stack:
        op = operator_without_s3(kube_api, ns, tmp_path / "operator.log")
        kubelet = operator_and_kubelet(stack, kube_api, op, ns, tmp_path / "kubelet", threads=2)
        kube_api.kubectl("apply", "-n", ns, "-f", str(path))

        # Killed once its first checkpoint is on the claim: its latest.json here, as reported on a cluster.
        wait_for(
            "the first checkpoint on the claim",
            lambda: first_checkpoint(kube_api, ns, kubelet),
            timeout=600,
            interval=0.2,
            log=tmp_path / "operator.log",
        )
        first_pod = _kill_trainer(kube_api, ns, kubelet)
        status = wait_for(
            "sol-tft to finish",
            lambda: ((s := tr_status(kube_api, ns)).get("phase") in ("Succeeded", "Failed") and s) or None,
            timeout=900,
            interval=1.0,
        )
        pods = kube_api.kubectl("get", "pods", "-n", ns, "-l", "job-name=sol-tft-train", "-o", "name")
        names = [p.split("/")[-1] for p in pods.stdout.split()]
        logs = {p: kubelet.logs(p) if kubelet else _logs(kube_api, ns, p) for p in names}
        assert status["phase"] == "Succeeded", f"{status}\n{logs}\n{op.log()[-3000:]}"
        describe = kube_api.kubectl("describe", "tr", "sol-tft", "-n", ns).stdout

    assert status["restarts"] >= 1 and condition(status, "Succeeded")["status"] == "True"
    assert status["progress"]["epochDisplay"] == "4/4"
    assert status["checkpoint"]["latest"].startswith(f"{URI}/checkpoints/epoch-")
    assert status["checkpoint"]["best"] == f"{URI}/best.pt"
    assert "/var/lib/trainer" not in json.dumps(status) and str(tmp_path) not in json.dumps(status)
    (retried,) = [p for p in names if p != first_pod]
    assert f"resuming from {URI}/checkpoints/epoch-" in logs[retried], logs[retried][-3000:]
    assert '"event": "resume"' not in logs[first_pod]
    assert URI in describe and "CheckpointVolume" in describe, describe
    claim = json.loads(kube_api.kubectl("get", "pvc", CLAIM, "-n", ns, "-o", "json").stdout)
    assert claim["metadata"]["ownerReferences"][0]["name"] == "sol-tft"
    if kubelet is not None:  # the claim's directory: the artefacts, and metrics.json names the claim's URI
        store = kubelet.workdir / "pvs" / ns / CLAIM / "sol-tft"
        assert {"best.pt", "latest.json", "metrics.json", "last.pt"} <= {p.name for p in store.iterdir()}
        assert json.loads((store / "metrics.json").read_text())["output"] == URI

    kube_api.kubectl("delete", "tr", "sol-tft", "-n", ns, "--wait=false")
    wait_for(
        "the claim to go with its run",
        lambda: kube_api.kubectl("get", "pvc", CLAIM, "-n", ns, check=False).returncode != 0,
        timeout=120,
        interval=0.5,
    )


def first_checkpoint(kube_api: KubeApi, ns: str, kubelet: Kubelet | None) -> bool:
    if kubelet is not None:
        return (kubelet.workdir / "pvs" / ns / CLAIM / "sol-tft" / "latest.json").exists()
    latest = (tr_status(kube_api, ns).get("checkpoint") or {}).get("latest") or ""
    return str(latest).startswith(URI)


def _logs(kube_api: KubeApi, ns: str, pod: str) -> str:
    return kube_api.kubectl("logs", "-n", ns, pod, check=False).stdout
