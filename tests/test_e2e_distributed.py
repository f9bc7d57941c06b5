"""End to end, two workers: kubectl apply a 2-worker TrainingRun -> operator -> Indexed Job + headless Service ->
two trainer pods (real processes under ``trainer.launch``/torchrun) rendezvous over gloo -> checkpoints in S3 ->
Succeeded; killing worker 1 mid-run makes the operator restart the whole gang, which resumes and ends with the
same weights as an uninterrupted 2-worker run.

Against the emulator (default) the kubelet harness runs each pod of the Indexed Job as a local process with
``JOB_COMPLETION_INDEX`` and rewrites ``<pod>.<service>`` names to 127.0.0.1 (its documented DNS shim: the
emulator has no DNS). With KUBECONFIG pointing at a real cluster the same test runs there (the E2E_* variables of
tests/test_e2e.py); the kill then deletes worker 1's pod.
"""

from __future__ import annotations

import io
import os
import pathlib
import subprocess
import sys
from contextlib import ExitStack
from typing import Any

import pytest
import torch
import yaml

from tests.operator.test_integration import Operator, condition, free_port
from tests.support.cluster import Storage
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.kubeemu.kubelet import Kubelet, trainer_pod_env
from tests.support.trainer_helpers import ROOT, assert_same_weights, trainer_env
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

EPOCHS = 3


def spec_doc(**overrides: Any) -> dict[str, Any]:
    """The sample run made small and CPU-only, with two workers of one process each."""
    run = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())
    spec = run["spec"]
    spec.update({"symbols": None, "workers": 2, "procsPerWorker": 1, "tolerations": []})
    spec["resources"] = {"limits": {"memory": "2Gi"}}
    spec["model"].update({"hiddenSize": 8, "attentionHeads": 2})
    spec["data"]["inputWindow"] = 20
    # Small batches make an epoch last a few seconds, so that the kill lands inside the run.
    spec["training"].update({"epochs": EPOCHS, "device": "cpu", "batchSize": 16})
    spec.update(overrides)
    return dict(run)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The same spec trained by two local ranks (one machine), never interrupted: the weights to match."""
    tmp = tmp_path_factory.mktemp("ref")
    manifest = tmp / "run.yaml"
    manifest.write_text(yaml.safe_dump(spec_doc()))
    cmd = [
        sys.executable,
        "-m",
        "trainer.launch",
        "--standalone",
        "--nproc-per-node",
        "2",
        "--max-restarts",
        "0",
    ]
    cmd += ["-m", "trainer", "run", str(manifest), "--output", str(tmp / "out"), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=trainer_env(), cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return weights_of((tmp / "out" / "last.pt").read_bytes())


def weights_of(data: bytes) -> dict[str, torch.Tensor]:
    state = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    return {**state["model"], **{f"best.{k}": v for k, v in state["best_model"].items()}}


def status_of(kube_api: KubeApi, ns: str, name: str) -> dict[str, Any]:
    out = kube_api.kubectl("get", "tr", name, "-n", ns, "-o", "yaml").stdout
    return dict(yaml.safe_load(out).get("status") or {})


class Cluster:
    """The operator, the kubelet (emulator only), the S3 Secret and the CRD for one test."""

    def __init__(
        self, kube_api: KubeApi, ns: str, store: Storage, tmp: pathlib.Path, stack: ExitStack
    ) -> None:
        self.kube, self.ns, self.store, self.tmp = kube_api, ns, store, tmp
        kube_api.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
        self.op = Operator(kube_api, ns, tmp / "operator.log")
        self.op.env["TRAINOP_RENDEZVOUS_PORT"] = str(free_port())  # tests may run next to other trainings
        self.op.env["TRAINOP_RENDEZVOUS_TIMEOUT_SECONDS"] = "60"
        self.op.start()
        stack.callback(self.op.stop)
        self.kubelet: Kubelet | None = None
        if not kube_api.real:
            env = trainer_pod_env(
                kube_api.env["KUBECONFIG"], OMP_NUM_THREADS="1", TRAINER_SHARED_DIR=str(tmp)
            )
            self.kubelet = stack.enter_context(
                Kubelet(kube_api.api, tmp / "kubelet", extra_env=env, namespace=ns)
            )

    def apply(self, name: str) -> str:
        """Create the run; returns its checkpoint prefix in the bucket."""
        secret = self.store.secret_manifest()
        run = spec_doc()
        run["metadata"]["name"] = name
        run["spec"]["checkpoint"].update(
            {"uri": f"s3://{self.store.bucket}/{self.ns}/{name}", "s3Endpoint": self.store.endpoint}
        )
        run["spec"]["s3CredentialsSecret"] = {"name": "s3-creds"}
        if self.kube.real:
            run["spec"]["image"] = os.environ["E2E_TRAINER_IMAGE"]
        path = self.tmp / f"{name}.yaml"
        path.write_text(yaml.safe_dump_all([secret, run]))
        self.kube.kubectl("apply", "-n", self.ns, "-f", str(path))
        return f"{self.ns}/{name}/"

    def finished(self, name: str) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            s = status_of(self.kube, self.ns, name)
            return s if s.get("phase") in ("Succeeded", "Failed") else None

        status: dict[str, Any] = wait_for(f"{name} to finish", done, timeout=900, interval=1.0)
        assert status["phase"] == "Succeeded", f"{status}\n{self.logs(name)}\n{self.op.log()[-4000:]}"
        return status

    def logs(self, name: str) -> str:
        if self.kubelet is None:
            return ""
        pods = sorted((self.kubelet.workdir).glob(f"{name}-train-*.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in pods)

    def last_weights(self, prefix: str) -> dict[str, torch.Tensor]:
        body = self.store.client().get_object(Bucket=self.store.bucket, Key=prefix + "last.pt")["Body"].read()
        return weights_of(body)

    def kill_worker(self, name: str, index: int) -> str:
        job = f"{name}-train"
        if self.kubelet is not None:
            kubelet = self.kubelet
            pod = wait_for(
                f"worker {index} running", lambda: kubelet.pods_by_index(job).get(index), timeout=120
            )
            kubelet.kill(str(pod))
            return str(pod)
        out = self.kube.kubectl(
            "get",
            "pods",
            "-n",
            self.ns,
            "-l",
            f"job-name={job},batch.kubernetes.io/job-completion-index={index}",
            "-o",
            "name",
        ).stdout.split()
        subprocess.run(
            ["kubectl", "delete", "-n", self.ns, "--wait=false", *out],
            env={**os.environ, **self.kube.env},
            check=True,
        )
        return out[0]


@pytest.fixture()
def cluster(
    kube_api: KubeApi, kube_namespace: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> Any:
    with ExitStack() as stack:
        yield Cluster(kube_api, kube_namespace, Storage(kube_api, request), tmp_path, stack)


def test_two_workers_rendezvous_train_and_succeed(
    cluster: Cluster, reference: dict[str, torch.Tensor]
) -> None:
    prefix = cluster.apply("sol-ddp")
    status = cluster.finished("sol-ddp")
    assert status["progress"]["epochDisplay"] == f"{EPOCHS}/{EPOCHS}"
    assert status.get("restarts", 0) == 0 and condition(status, "Succeeded")["status"] == "True"
    assert status["checkpoint"]["latest"].startswith(
        f"s3://{cluster.store.bucket}/{prefix}checkpoints/epoch-"
    )
    keys = cluster.store.keys(prefix)
    for name in ("best.pt", "last.pt", "latest.json", "metrics.json"):
        assert prefix + name in keys, sorted(keys)
    assert_same_weights(cluster.last_weights(prefix), reference)  # two pods == two local ranks, bit for bit
    service = cluster.kube.kubectl("get", "svc", "sol-ddp-workers", "-n", cluster.ns, "-o", "yaml").stdout
    assert yaml.safe_load(service)["spec"]["clusterIP"] == "None"
    if cluster.kubelet is not None:  # both workers ran; only rank 0 printed progress
        logs = {p.name: p.read_text() for p in cluster.kubelet.workdir.glob("sol-ddp-train-*.log")}
        assert len(logs) == 2, list(logs)
        rank0 = [t for n, t in logs.items() if n.startswith("sol-ddp-train-0-")]
        rank1 = [t for n, t in logs.items() if n.startswith("sol-ddp-train-1-")]
        assert rank0 and '"event": "epoch"' in rank0[0] and '"event": "summary"' in rank0[0]
        assert rank1 and '"event": "epoch"' not in rank1[0], rank1[0][-2000:]
    wide = cluster.kube.kubectl("get", "tr", "sol-ddp", "-n", cluster.ns, "-o", "wide").stdout.splitlines()
    at = wide[0].index("WORKERS")  # columns are aligned; an empty one would shift a split()
    assert wide[1][at:].split()[0] == "2", "\n".join(wide)


def test_a_killed_worker_restarts_the_gang_which_resumes_to_the_same_weights(
    cluster: Cluster, reference: dict[str, torch.Tensor]
) -> None:
    prefix = cluster.apply("sol-ddp-kill")
    wait_for(
        "the first checkpoint in S3",
        lambda: f"{prefix}latest.json" in cluster.store.keys(prefix) or None,
        timeout=600,
    )
    killed = cluster.kill_worker("sol-ddp-kill", 1)
    status = cluster.finished("sol-ddp-kill")
    assert status["restarts"] == 1 and status.get("attempt") == 1, status
    events = cluster.kube.kubectl(
        "get", "events", "-n", cluster.ns, "--field-selector", "reason=Restarted", "-o", "yaml"
    ).stdout
    messages = [e.get("message", "") for e in yaml.safe_load(events).get("items") or []]
    assert any("worker 1" in m and killed in m for m in messages), messages
    if cluster.kubelet is not None:  # the new attempt's rank 0 resumed from the checkpoint in S3
        pods = sorted(
            cluster.kubelet.workdir.glob("sol-ddp-kill-train-0-*.log"), key=lambda p: p.stat().st_mtime
        )
        assert len(pods) == 2 and "resuming from s3://" in pods[-1].read_text(), cluster.logs("sol-ddp-kill")
    assert_same_weights(cluster.last_weights(prefix), reference)
