"""Real kubectl against the emulator for what a person types by hand (the demo's README): the imperative
``kubectl create`` generators, which send protobuf, and ``kubectl logs`` of a pod the kubelet harness runs."""

from __future__ import annotations

import base64
import json
import pathlib
import uuid

import pytest

from tests.support.kubeemu.fixtures import KubeApi, emulator_only
from tests.support.kubeemu.kubelet import Kubelet, default_env
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e


def test_kubectl_create_namespace_configmap_secret_serviceaccount(
    kube_api: KubeApi, kube_namespace: str, tmp_path: pathlib.Path
) -> None:
    name = f"hand-{uuid.uuid4().hex[:8]}"
    created = kube_api.kubectl("create", "namespace", name)
    try:
        assert created.stdout.strip() == f"namespace/{name} created"
        assert (
            json.loads(kube_api.kubectl("get", "ns", name, "-o", "json").stdout)["status"]["phase"]
            == "Active"
        )
    finally:
        kube_api.kubectl("delete", "namespace", name, "--wait=false", check=False)
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\xff\x00\x01")
    ns = ("-n", kube_namespace)
    kube_api.kubectl("create", "configmap", "cm", "--from-literal=a=b", f"--from-file=bin={blob}", *ns)
    kube_api.kubectl("create", "secret", "generic", "s", "--from-literal=k=v", "--type=demo/kind", *ns)
    kube_api.kubectl("create", "serviceaccount", "sa", *ns)
    cm = json.loads(kube_api.kubectl("get", "cm", "cm", "-o", "json", *ns).stdout)
    assert cm["data"] == {"a": "b"} and base64.b64decode(cm["binaryData"]["bin"]) == b"\xff\x00\x01"
    secret = json.loads(kube_api.kubectl("get", "secret", "s", "-o", "json", *ns).stdout)
    assert secret["type"] == "demo/kind" and base64.b64decode(secret["data"]["k"]) == b"v"
    assert kube_api.kubectl("get", "sa", "sa", "-o", "name", *ns).stdout.strip() == "serviceaccount/sa"
    if not kube_api.real:  # what the emulator does not decode it says so, and how to send it instead
        job = kube_api.kubectl("create", "job", "j", "--image=busybox", *ns, check=False)
        assert job.returncode != 0 and "send JSON (kubectl create -f / apply -f do)" in job.stderr


ECHO = "for i in 1 2 3; do echo line $i; sleep 0.3; done; echo done >&2"


@emulator_only
def test_kubectl_logs_of_a_kubelet_pod(kube_api: KubeApi, kube_namespace: str) -> None:
    """The kubelet's log file of the pod, through ``pods/NAME/log``: whole, ``-f`` until the pod ends, ``--tail``,
    by ``job/NAME``; a bad container and ``--previous`` are refused as a real API server refuses them."""
    assert kube_api.url is not None and kube_api.pod_logs is not None
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "echo"},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "x", "command": ["sh", "-c", ECHO]}],
                }
            },
        },
    }
    ns = ("-n", kube_namespace)
    with Kubelet(kube_api.api, kube_api.pod_logs, extra_env=default_env(), namespace=kube_namespace):
        kube_api.kubectl("create", "-f", "-", *ns, stdin=json.dumps(job))
        pod = wait_for(
            "the echo pod",
            lambda: kube_api.kubectl("get", "pods", "-l", "job-name=echo", "-o", "name", *ns).stdout.strip(),
        )
        followed = kube_api.kubectl("logs", "-f", pod, *ns, timeout=60).stdout
        assert followed.splitlines() == [
            "line 1",
            "line 2",
            "line 3",
            "done",
        ]  # stderr too, as in a container
        assert kube_api.kubectl("logs", pod, "--tail=2", *ns).stdout.splitlines() == ["line 3", "done"]
        assert kube_api.kubectl("logs", "job/echo", *ns).stdout == followed
        wrong = kube_api.kubectl("logs", pod, "-c", "nope", *ns, check=False)
        assert wrong.returncode != 0 and f"container nope is not valid for pod {pod[4:]}" in wrong.stderr
        previous = kube_api.kubectl("logs", pod, "--previous", *ns, check=False)
        assert previous.returncode != 0 and "previous terminated container" in previous.stderr
    idle = {"metadata": {"name": "idle"}, "spec": {"containers": [{"name": "main", "image": "x"}]}}
    kube_api.api.create(f"/api/v1/namespaces/{kube_namespace}/pods", idle)  # a pod no kubelet runs
    answer = kube_api.kubectl("logs", "idle", *ns, check=False)
    assert answer.returncode != 0 and 'container "main" in pod "idle" is waiting to start' in answer.stderr
