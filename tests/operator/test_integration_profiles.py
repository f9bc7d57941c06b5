# ruff: noqa: F811  (the api/ns/crd fixtures are imported from the integration tests and used as parameters)
"""Cluster-wide trainer defaults and profiles with the operator (``python -m trainop``, a real subprocess) against
the API emulator: a run naming ``profile: cpu`` gets the profile's pod fields in its Job and ``status.resolved``
with each field's source; a run naming an unknown profile fails as InvalidSpec, listing the known ones.

No trainer and no kubelet: the Job is created and left alone, which is all these need to see."""

from __future__ import annotations

import copy
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest

from tests.operator.test_integration import (  # noqa: F401 (fixtures)
    RUNS,
    SAMPLE,
    Operator,
    api,
    condition,
    crd,
    jobs,
    ns,
    wait_event,
    wait_job,
    wait_phase,
)
from tests.support.kubeemu.client import Api
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DEFAULTS = {"nodeSelector": {"node-pool": "gpu"}, "tolerations": [GPU_TOLERATION]}
PROFILES = {
    "cpu": {
        "resources": {"limits": {"cpu": "4", "memory": "8Gi"}, "requests": {"cpu": "2"}},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "tolerations": [],
        "stallTimeout": "1h",
    },
    "a100": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
}


@pytest.fixture()
def operator(kube_api: KubeApi, crd: None, ns: str, tmp_path: pathlib.Path) -> Iterator[Operator]:
    op = Operator(kube_api, ns, tmp_path / "operator.log")
    op.env["TRAINOP_TRAINER_DEFAULTS"] = json.dumps(DEFAULTS)
    op.env["TRAINOP_TRAINER_PROFILES"] = json.dumps(PROFILES)
    op.start()
    yield op
    op.stop()


def create_profiled_run(api: Api, ns: str, name: str, profile: str) -> dict[str, Any]:
    """The sample with its pod fields left to the cluster (no resources, tolerations, stallTimeout)."""
    spec = copy.deepcopy(SAMPLE["spec"])
    for key in ("resources", "tolerations", "stallTimeout"):
        del spec[key]
    body = {**SAMPLE, "metadata": {"name": name}, "spec": {**spec, "profile": profile}}
    return dict(api.create(RUNS.format(ns=ns), body))


def test_a_profile_shapes_the_job_and_status_resolved(
    api: Api, ns: str, operator: Operator, kube_api: KubeApi
) -> None:
    create_profiled_run(api, ns, "on-cpu", "cpu")
    job = wait_job(api, ns, "on-cpu-train")
    assert job["metadata"]["annotations"]["cryptopredictor.dev/profile"] == "cpu"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"] == {
        "limits": {"cpu": "4", "memory": "8Gi"},
        "requests": {"cpu": "2"},
    }
    assert pod["nodeSelector"] == {
        "kubernetes.io/arch": "amd64"
    }  # the profile's, not merged with the defaults'
    assert "tolerations" not in pod  # the profile's [] cleared the defaults' GPU toleration
    resolved = wait_for(
        "status.resolved",
        lambda: (api.get(f"{RUNS.format(ns=ns)}/on-cpu").get("status") or {}).get("resolved"),
    )
    assert resolved["profile"] == "cpu" and resolved["stallTimeout"] == "1h"
    assert (
        resolved["checkpointUri"] == f"s3://checkpoints/runs/{ns}/on-cpu"
        and resolved["checkpointStore"] == "s3"
    )
    assert resolved["sources"] == {
        "image": "built-in",
        "resources": "profile",
        "nodeSelector": "profile",
        "tolerations": "profile",
        "priorityClassName": "built-in",
        "serviceAccountName": "built-in",
        "stallTimeout": "profile",
        "checkpointUri": "defaults",
    }
    wide = kube_api.kubectl("get", "tr", "on-cpu", "-n", ns, "-o", "wide").stdout.splitlines()
    at = wide[0].index("PROFILE")  # columns are aligned; empty ones (EPOCH...) print as blanks
    assert wide[1][at:].split()[0] == "cpu", "\n".join(wide)

    create_profiled_run(api, ns, "typo", "a10")
    status = wait_phase(api, ns, "typo", "Failed", "InvalidSpec")
    message = condition(status, "Failed")["message"]
    assert message == "spec.profile: unknown profile 'a10'; known: a100, cpu"
    assert wait_event(api, ns, "typo", "InvalidSpec")[2] == message
    assert [j["metadata"]["name"] for j in jobs(api, ns)] == ["on-cpu-train"]
