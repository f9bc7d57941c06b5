"""The emulator under real clients: a tiny kopf operator (create handler, kopf.adopt, finalizers), the
kubelet harness running Jobs as local processes, and the 200-create load check."""

from __future__ import annotations

import json
import os
import pathlib
import sys
import time
from typing import Any

import pytest

from tests.support.kubeemu.client import Api
from tests.support.kubeemu.fixtures import KubeApi, kube_api, kube_namespace  # noqa: F401
from tests.support.kubeemu.kubelet import Kubelet, default_env
from tests.support.waiting import wait_for

OPERATOR = """
import kopf

@kopf.on.create("", "v1", "configmaps", labels={"smoke": "yes"})
def create_child(body, namespace, name, **_):
    child = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name + "-child"},
             "stringData": {"a": "b"}}
    kopf.adopt(child, owner=body)
    import kubernetes
    kubernetes.config.load_kube_config()
    kubernetes.client.CoreV1Api().create_namespaced_secret(namespace, child)
    return {"child": name + "-child"}

@kopf.on.delete("", "v1", "configmaps", labels={"smoke": "yes"})
def delete_parent(name, logger, **_):
    logger.info("deleting %s", name)
"""


@pytest.mark.slow
def test_kopf_operator_smoke(
    kube_api: KubeApi,  # noqa: F811
    kube_namespace: str,  # noqa: F811
    tmp_path: pathlib.Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from kopf.testing import KopfRunner

    api = kube_api.api
    kube_api.use_in_process(monkeypatch)
    script = tmp_path / "op.py"
    script.write_text(OPERATOR)
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    args = ["run", "--standalone", "--namespace", kube_namespace, "--verbose", str(script)]
    with KopfRunner(args, timeout=60) as runner:
        api.create(base, {"metadata": {"name": "parent", "labels": {"smoke": "yes"}}})
        child = wait_for(
            "the child Secret",
            lambda: api.maybe_get(f"/api/v1/namespaces/{kube_namespace}/secrets/parent-child"),
            30,
            interval=0.2,
        )
        parent = api.get(f"{base}/parent")
        ref = child["metadata"]["ownerReferences"][0]
        assert ref["uid"] == parent["metadata"]["uid"] and ref["kind"] == "ConfigMap" and ref["controller"]
        assert child["metadata"]["namespace"] == kube_namespace
        wait_for(
            "the finalizer of kopf on the parent",
            lambda: (
                "kopf.zalando.org/KopfFinalizerMarker"
                in (api.get(f"{base}/parent")["metadata"].get("finalizers") or [])
            ),
            30,
            interval=0.2,
        )
        wait_for(
            "the last-handled annotation of kopf",
            lambda: json.loads(
                api.get(f"{base}/parent")["metadata"]
                .get("annotations", {})
                .get("kopf.zalando.org/last-handled-configuration", "null")
            ),
            30,
            interval=0.2,
        )
        api.delete(f"{base}/parent")
        wait_for(
            "the parent to be gone", lambda: api.maybe_get(f"{base}/parent") is None, 30, interval=0.2
        )  # kopf removed its finalizer
        wait_for(
            "the child Secret to be collected",
            lambda: api.maybe_get(f"/api/v1/namespaces/{kube_namespace}/secrets/parent-child") is None,
            30,
            interval=0.2,
        )
    assert runner.exit_code == 0, runner.output
    assert "Handler 'create_child' succeeded" in runner.output
    assert "Handler 'delete_parent' succeeded" in runner.output


def job(name: str, code: str, backoff: int = 0, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"e2e": "yes"}},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "main",
                            "image": "trainer",
                            "command": [sys.executable, "-c"],
                            "args": [code],
                            "env": env or [],
                        }
                    ],
                }
            },
        },
    }


def conditions(api: Api, path: str) -> dict[str, str]:
    status = api.get(path).get("status") or {}
    return {c["type"]: c.get("reason", "") for c in status.get("conditions", []) if c["status"] == "True"}


@pytest.mark.slow
def test_kubelet_runs_jobs(kube_api: KubeApi, kube_namespace: str, tmp_path: pathlib.Path) -> None:  # noqa: F811
    api, jobs = kube_api.api, f"/apis/batch/v1/namespaces/{kube_namespace}/jobs"
    api.create(
        f"/api/v1/namespaces/{kube_namespace}/secrets",
        {"metadata": {"name": "creds"}, "stringData": {"key": "s3cr3t"}},
    )
    out = tmp_path / "out.txt"
    env = [
        {"name": "SECRET", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "key"}}},
        {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "OUT", "value": str(out)},
    ]
    code = "import os; open(os.environ['OUT'], 'w').write(os.environ['SECRET'] + ' ' + os.environ['POD'])"
    with Kubelet(
        api, tmp_path / "kubelet", extra_env=default_env(), label_selector="e2e=yes", namespace=kube_namespace
    ) as kubelet:
        api.create(jobs, job("ok", code, env=env))
        api.create(jobs, job("bad", "import sys; sys.exit(3)", backoff=2))
        api.create(jobs, job("slow", "import time; time.sleep(60)", backoff=1))
        assert (
            wait_for(
                "Job ok to complete", lambda: conditions(api, f"{jobs}/ok").get("Complete"), 30, interval=0.2
            )
            == "Completed"
        )
        secret, pod_name = out.read_text().split()
        assert secret == "s3cr3t" and pod_name.startswith("ok-")
        pod = api.get(f"/api/v1/namespaces/{kube_namespace}/pods/{pod_name}")
        assert pod["status"]["phase"] == "Succeeded" and pod["metadata"]["labels"]["job-name"] == "ok"
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "Job"
        ok = api.get(f"{jobs}/ok")["status"]
        assert ok["succeeded"] == 1 and ok["startTime"] and ok["completionTime"]
        assert (
            wait_for(
                "Job bad to fail", lambda: conditions(api, f"{jobs}/bad").get("Failed"), 30, interval=0.2
            )
            == "BackoffLimitExceeded"
        )
        assert api.get(f"{jobs}/bad")["status"]["failed"] == 3  # 1 try + 2 retries
        bad_pods = api.get(f"/api/v1/namespaces/{kube_namespace}/pods?labelSelector=job-name=bad")["items"]
        assert len(bad_pods) == 3
        terminated = bad_pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]
        assert bad_pods[0]["status"]["phase"] == "Failed" and terminated["exitCode"] == 3
        first = wait_for("a running pod of slow", lambda: kubelet.running_pods("slow"), 30, interval=0.2)[0]
        kubelet.kill(first)
        second = wait_for(
            "a second pod of slow",
            lambda: [p for p in kubelet.running_pods("slow") if p != first],
            30,
            interval=0.2,
        )[0]
        assert api.get(f"{jobs}/slow")["status"]["failed"] == 1 and second != first
        api.merge(f"{jobs}/slow", {"spec": {"suspend": True}})
        assert (
            wait_for(
                "Job slow to be suspended",
                lambda: conditions(api, f"{jobs}/slow").get("Suspended"),
                30,
                interval=0.2,
            )
            == "JobSuspended"
        )
        assert kubelet.running_pods("slow") == [] and not kubelet.errors
        api.delete(f"{jobs}/ok", {"propagationPolicy": "Background"})
        assert api.maybe_get(f"/api/v1/namespaces/{kube_namespace}/pods/{pod_name}") is None  # GC'd


@pytest.mark.slow
def test_two_hundred_creates(kube_api: KubeApi, kube_namespace: str) -> None:  # noqa: F811
    api, base = kube_api.api, f"/api/v1/namespaces/{kube_namespace}/configmaps"
    started = time.perf_counter()
    for i in range(200):
        api.create(base, {"metadata": {"name": f"cm-{i}", "labels": {"i": str(i % 2)}}})
        api.get(f"{base}/cm-{i}")
    listed = api.get(f"{base}?labelSelector=i=1")["items"]
    elapsed = time.perf_counter() - started
    print(f"\n200 creates + 200 gets + 1 list: {elapsed:.2f}s (pid {os.getpid()})")
    assert len(listed) == 100
