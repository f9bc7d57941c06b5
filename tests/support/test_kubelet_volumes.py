"""The toy kubelet's PersistentVolumeClaim shim (``tests/support/kubeemu/volumes``): a claim is a local directory
kept across pods, env paths under (or above) a mountPath are rewritten into the pod's mount tree, a pod whose
claim is missing stays Pending, and the emulator's garbage collector deletes a claim with its owner."""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.kubeemu import volumes
from tests.support.kubeemu.client import Api
from tests.support.kubeemu.fixtures import KubeApi, emulator_only, kube_api, kube_namespace  # noqa: F401
from tests.support.kubeemu.kubelet import Kubelet, default_env
from tests.support.waiting import wait_for

# What the pod does: append its name to <root>/<claim>/log and copy the file to $OUT (a path outside the claim).
WRITE = """
import os, pathlib
log = pathlib.Path(os.environ["ROOT"]) / "data" / "log"
log.parent.mkdir(parents=True, exist_ok=True)
with open(log, "a") as f:
    f.write(os.environ["POD"] + "\\n")
pathlib.Path(os.environ["OUT"]).write_text(log.read_text() + "DIRECT=" + os.environ["DIRECT"])
"""


@pytest.mark.parametrize(
    ("value", "moved"),
    [
        ("/mnt/pvc", True),  # above the mountPath (TRAINER_PVC_ROOT over <root>/<claim>)
        ("/mnt/pvc/data", True),  # the mountPath
        ("/mnt/pvc/data/x/y.pt", True),  # under it
        ("/mnt/pvcx", False),
        ("/mnt/other", False),
        ("/", False),
        ("mnt/pvc", False),  # not absolute
        ("pvc://data/x", False),
    ],
)
def test_env_paths_at_under_or_above_a_mount_are_rewritten(value: str, moved: bool) -> None:
    root = pathlib.Path("/tmp/kubelet/p.mounts")
    out = volumes.rewrite({"V": value}, root, ["/mnt/pvc/data"])["V"]
    assert out == (f"{root}{value}" if moved else value)


def job(name: str, out: pathlib.Path, claim: str = "data") -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"e2e-volumes": "yes"}},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": claim}}],
                    "containers": [
                        {
                            "name": "main",
                            "image": "python",
                            "command": [sys.executable, "-c", WRITE],
                            "volumeMounts": [{"name": "store", "mountPath": "/mnt/pvc/data"}],
                            "env": [
                                {"name": "ROOT", "value": "/mnt/pvc"},
                                {"name": "DIRECT", "value": "/mnt/pvc/data/log"},
                                {"name": "OUT", "value": str(out)},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                            ],
                        }
                    ],
                }
            },
        },
    }


def claim(name: str, owner: dict[str, Any] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


@pytest.fixture()
def env(kube_api: KubeApi, kube_namespace: str, tmp_path: pathlib.Path) -> Iterator[tuple[Api, str, Kubelet]]:  # noqa: F811
    if kube_api.real:
        pytest.fail("tests/support/test_kubelet_volumes.py tests the emulator's kubelet; unset KUBECONFIG")
    with Kubelet(
        kube_api.api,
        tmp_path / "kubelet",
        extra_env=default_env(),
        label_selector="e2e-volumes=yes",
        namespace=kube_namespace,
    ) as kubelet:
        yield kube_api.api, kube_namespace, kubelet
        assert not kubelet.errors


def complete(api: Api, ns: str, name: str) -> bool:
    status = api.get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}").get("status") or {}
    return any(c["type"] == "Complete" and c["status"] == "True" for c in status.get("conditions", []))


@pytest.mark.slow
def test_a_claim_is_a_directory_kept_across_pods(
    env: tuple[Api, str, Kubelet], tmp_path: pathlib.Path
) -> None:
    api, ns, kubelet = env
    core, jobs = f"/api/v1/namespaces/{ns}", f"/apis/batch/v1/namespaces/{ns}/jobs"
    api.create(jobs, job("first", tmp_path / "first.txt"))
    pod = wait_for(
        "a pod of first", lambda: api.get(f"{core}/pods?labelSelector=job-name=first")["items"] or None
    )[0]
    wait_for(
        "it to be left Pending",
        lambda: (api.get(f"{core}/pods/{pod['metadata']['name']}").get("status") or {}).get("conditions"),
    )
    status = api.get(f"{core}/pods/{pod['metadata']['name']}")["status"]
    assert status["phase"] == "Pending" and status["conditions"][0]["reason"] == "Unschedulable"
    assert 'persistentvolumeclaim "data" not found' in status["conditions"][0]["message"]
    assert not kubelet.running_pods("first")

    api.create(f"{core}/persistentvolumeclaims", claim("data"))
    wait_for("first to complete", lambda: complete(api, ns, "first"), timeout=60)
    assert [p["metadata"]["name"] for p in api.get(f"{core}/pods?labelSelector=job-name=first")["items"]] == [
        pod["metadata"]["name"]
    ], "the Pending pod is the one that ran"
    assert api.get(f"{core}/persistentvolumeclaims/data")["status"]["phase"] == "Bound"

    api.create(jobs, job("second", tmp_path / "second.txt"))
    wait_for("second to complete", lambda: complete(api, ns, "second"), timeout=60)
    lines = (tmp_path / "second.txt").read_text().splitlines()
    assert lines[0] == pod["metadata"]["name"] and lines[1].startswith("second-"), lines
    direct = pathlib.Path(lines[2].removeprefix("DIRECT="))
    assert direct.resolve() == (kubelet.workdir / "pvs" / ns / "data" / "log").resolve()


@emulator_only  # the emulator's garbage collector (a real cluster runs its own)
def test_a_claim_goes_with_its_owner(kube_api: KubeApi, kube_namespace: str) -> None:  # noqa: F811
    api, core = kube_api.api, f"/api/v1/namespaces/{kube_namespace}"
    owner = api.create(
        f"{core}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o"}}
    )
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": owner["metadata"]["uid"]}
    api.create(f"{core}/persistentvolumeclaims", claim("owned", ref))
    api.delete(f"{core}/configmaps/o")
    wait_for("the claim to go", lambda: api.maybe_get(f"{core}/persistentvolumeclaims/owned") is None)
