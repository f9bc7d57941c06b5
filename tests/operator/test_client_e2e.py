"""End to end: ``python -m trainop submit FILE --follow`` (a real subprocess) against the operator, the API and
the real trainer; then the other commands against the runs it left.

A tiny run succeeds (exit 0, its epochs printed from the trainer's log), and at the same time a run whose data
file does not exist fails as the trainer refuses it (exit 2, InvalidConfig, the trainer's own line). Then: a
second submit of the same file creates nothing and says so, a changed file is refused (exit 5), ``wait``
gives each run's outcome as its exit code, ``logs`` prints the trainer's lines, ``list`` shows both, and a
re-attached ``submit --follow`` in a terminal draws the trainer's bar. Against the emulator the kubelet harness
runs the pods as local processes and the emulator serves ``pods/log`` from its work directory; with KUBECONFIG
set the same test runs on a real cluster (the E2E_* variables of tests/test_e2e.py).
"""

from __future__ import annotations

import os
import pathlib
import pty
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import yaml
from trainop.client_cli import main

from tests.operator.test_integration import ROOT, Operator
from tests.support.cluster import Storage, operator_and_kubelet
from tests.support.kubeemu.fixtures import KubeApi

pytestmark = [pytest.mark.slow, pytest.mark.e2e]


def manifest(name: str, store: Storage, ns: str, **data: Any) -> dict[str, Any]:
    """A tiny run: 3 epochs of a hidden-size-8 model on five months of SOL."""
    spec: dict[str, Any] = {
        "symbol": "SOL",
        "data": {"inputWindow": 20, "start": "2024-08-01", "end": "2024-12-31", **data},
        "model": {"hiddenSize": 8, "attentionHeads": 2},
        "training": {"epochs": 3, "device": "cpu"},
        "checkpoint": {"uri": f"s3://{store.bucket}/{ns}/{name}", "s3Endpoint": store.endpoint},
        "s3CredentialsSecret": {"name": "s3-creds"},
        "resources": {"limits": {"memory": "2Gi"}},
        "tolerations": [],
        "backoffLimit": 1,
    }
    if image := os.environ.get("E2E_TRAINER_IMAGE"):
        spec["image"] = image
    return {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": name},
        "spec": spec,
    }


@pytest.fixture()
def cluster(
    kube_api: KubeApi, kube_namespace: str, request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> Iterator[Storage]:
    """The CRD, the S3 Secret, the operator and (emulator) the kubelet, for one namespace."""
    store = Storage(kube_api, request)
    kube_api.kubectl("apply", "-f", str(ROOT / "manifests" / "crd.yaml"))
    kube_api.kubectl("apply", "-n", kube_namespace, "-f", "-", stdin=yaml.safe_dump(store.secret_manifest()))
    logs = kube_api.pod_logs  # the emulator serves pods/log from the kubelet's workdir
    assert kube_api.real or logs is not None
    with ExitStack() as stack:
        op = Operator(kube_api, kube_namespace, tmp_path / "operator.log")
        operator_and_kubelet(stack, kube_api, op, kube_namespace, logs or tmp_path)
        yield store


def trainop(kube_api: KubeApi, *args: str, **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, **kube_api.env, "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "operator")))}
    return subprocess.Popen(
        [sys.executable, "-m", "trainop", *args],
        env=env,
        cwd=ROOT,
        text=True,
        **({"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT} | popen),
    )


def finish(proc: subprocess.Popen[str], timeout: float = 300) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"python -m trainop {proc.args} did not finish:\n{out}")
    return proc.returncode, out


def in_terminal(kube_api: KubeApi, *args: str, timeout: float = 120) -> tuple[int, str]:
    """The command with a pseudo-terminal as its stdout (what tqdm draws its bar on)."""
    leader, follower = pty.openpty()
    proc = trainop(kube_api, *args, stdout=follower, stderr=follower)
    os.close(follower)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal is closed: the process has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return proc.wait(timeout=30), b"".join(chunks).decode(errors="replace")


def run(capsys: pytest.CaptureFixture[str], kube_api: KubeApi, *args: str) -> tuple[int, str]:
    """A command in this process (faster than a subprocess for the ones that do not follow a training)."""
    code = main([*args, "--kubeconfig", str(kube_api.kubeconfig)])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_submit_follow_wait_logs_list(
    kube_api: KubeApi,
    kube_namespace: str,
    cluster: Storage,
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = kube_namespace
    good, bad = tmp_path / "tiny.yaml", tmp_path / "no-data.yaml"
    good.write_text(yaml.safe_dump(manifest("tiny", cluster, ns)))
    bad.write_text(yaml.safe_dump(manifest("no-data", cluster, ns, uri="/nonexistent/{symbol}-USD.csv")))

    followed = [
        trainop(kube_api, "submit", str(f), "--follow", "-n", ns, "--timeout", "5m") for f in (good, bad)
    ]
    (good_code, good_out), (bad_code, bad_out) = (finish(p) for p in followed)

    assert good_code == 0, good_out
    assert f"trainingrun tiny created in namespace {ns}" in good_out
    for epoch in (1, 2, 3):
        assert f"epoch {epoch}/3: train " in good_out, good_out
    assert "summary: best epoch" in good_out and "tiny Succeeded: valMase" in good_out.splitlines()[-1]
    assert bad_code == 2, bad_out  # Exit.BAD_INPUT: the trainer refused the data (InvalidConfig)
    assert "no-data Failed (InvalidConfig)" in bad_out.splitlines()[-1], bad_out
    assert "/nonexistent/SOL-USD.csv: file not found" in bad_out  # the trainer's own line, from its log

    code, out = run(capsys, kube_api, "submit", str(good), "-n", ns)
    assert code == 0 and f"trainingrun tiny exists in namespace {ns} (phase Succeeded" in out, out
    assert "not created again" in out
    changed = tmp_path / "tiny-5.yaml"
    doc = manifest("tiny", cluster, ns)
    doc["spec"]["training"]["epochs"] = 5
    changed.write_text(yaml.safe_dump(doc))
    code, out = run(capsys, kube_api, "submit", str(changed), "-n", ns, "--follow")
    assert code == 5 and "spec.training.epochs: 3 in the cluster, 5 in the file" in out, out

    assert run(capsys, kube_api, "wait", "tiny", "-n", ns, "--timeout", "30s")[0] == 0
    code, out = run(capsys, kube_api, "wait", "no-data", "-n", ns)
    assert code == 2 and "Failed (InvalidConfig)" in out
    code, out = run(capsys, kube_api, "logs", "tiny", "-n", ns)
    assert code == 0 and "epoch 3/3: train " in out and "summary: best epoch" in out, out
    code, out = run(capsys, kube_api, "logs", "tiny", "-n", ns, "--raw")
    assert code == 0 and '"event": "epoch"' in out
    code, out = run(capsys, kube_api, "list", "-n", ns)
    rows = [line.split() for line in out.splitlines()]
    assert code == 0 and rows[0][:4] == ["NAME", "SYMBOL", "PHASE", "EPOCH"], out
    assert rows[1][:4] == ["no-data", "SOL", "Failed", "InvalidConfig"], out  # no epoch, no folds
    assert rows[2][:4] == ["tiny", "SOL", "Succeeded", "3/3"], out

    code, out = in_terminal(kube_api, "submit", str(good), "--follow", "-n", ns)
    assert code == 0, out
    assert "training: 100%" in out and "3/3" in out, out  # the trainer's own tqdm bar
    assert "Result: " in out  # and its summary table
