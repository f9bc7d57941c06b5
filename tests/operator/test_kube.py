"""API errors -> kopf's Temporary/Permanent errors, and the operator's typed clients against the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kubernetes.client.exceptions import ApiException
from trainop.children import delete_children
from trainop.kube import Kube, to_kopf_error
from trainop.runs import Run
from trainop.runtime import Runtime
from trainop.settings import Settings

from tests.support.kubeemu.fixtures import KubeApi, emulator_only
from trainer.api.spec import TrainingRunSpec


def api_error(status: int, message: str = "nope") -> ApiException:
    exc = ApiException(status=status, reason="Reason")
    exc.body = json.dumps({"kind": "Status", "message": message})
    return exc


@pytest.mark.parametrize("status", [400, 422])
def test_rejected_objects_are_permanent(status: int) -> None:
    error = to_kopf_error(api_error(status, 'Job.batch "x" is invalid'), "creating Job x")
    assert isinstance(error, kopf.PermanentError) and "is invalid" in str(error)


@pytest.mark.parametrize("status", [403, 404, 409, 429, 500, 503])
def test_everything_else_is_retried(status: int) -> None:
    error = to_kopf_error(api_error(status, "exceeded quota"), "creating Job x")
    assert isinstance(error, kopf.TemporaryError) and not isinstance(error, kopf.PermanentError)
    assert error.delay == (30 if status == 429 else 10)


def test_connection_errors_are_retried() -> None:
    assert isinstance(to_kopf_error(ConnectionRefusedError("refused"), "x"), kopf.TemporaryError)


# --- the typed clients against the API (the emulator, or the cluster in $KUBECONFIG) ----------------------


@pytest.fixture()
def kube(kube_api: KubeApi, monkeypatch: pytest.MonkeyPatch) -> Iterator[Kube]:
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    client = Kube.connect()
    yield client
    client.close()


def owned(kind: str, name: str, namespace: str, uid: str, **fields: Any) -> dict[str, Any]:
    core = {"ServiceAccount": "v1", "Service": "v1", "PersistentVolumeClaim": "v1"}
    api_version = {"Job": "batch/v1", **core}.get(kind, "rbac.authorization.k8s.io/v1")
    owner = {"apiVersion": "cryptopredictor.dev/v1alpha1", "kind": "TrainingRun", "name": "r", "uid": uid}
    meta = {"name": name, "namespace": namespace, "ownerReferences": [owner]}
    return {"apiVersion": api_version, "kind": kind, "metadata": meta, **fields}


JOB_SPEC = {
    "spec": {
        "suspend": True,
        "template": {
            "spec": {"restartPolicy": "Never", "containers": [{"name": "trainer", "image": "trainer:1"}]}
        },
    }
}


def test_create_is_idempotent_and_answers_are_the_servers_json(kube: Kube, kube_namespace: str) -> None:
    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "sa", "namespace": kube_namespace},
    }
    first, created = kube.create(account)
    again, created_again = kube.create(account)  # 409: the existing object
    assert created and not created_again
    assert again["metadata"]["uid"] == first["metadata"]["uid"]
    read = kube.read("ServiceAccount", kube_namespace, "sa")
    assert read is not None and read["metadata"]["creationTimestamp"].endswith("Z")  # not re-serialised
    assert kube.read("ServiceAccount", kube_namespace, "missing") is None
    assert kube.delete("ServiceAccount", kube_namespace, "sa") is True
    assert kube.delete("ServiceAccount", kube_namespace, "sa") is False


def test_job_patch_pods_and_runs(kube: Kube, kube_namespace: str) -> None:
    kube.create(owned("Job", "j-train", kube_namespace, "u-1", **JOB_SPEC))
    patched = kube.patch_job(kube_namespace, "j-train", {"spec": {"suspend": False}})
    assert patched is not None and patched["spec"]["suspend"] is False
    assert kube.patch_job(kube_namespace, "missing", {"spec": {"suspend": True}}) is None
    assert kube.list_pods(kube_namespace, "cryptopredictor.dev/run=nobody") == []


def test_events_come_from_the_operator(kube: Kube, kube_namespace: str) -> None:
    account, _ = kube.create(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "ev", "namespace": kube_namespace},
        }
    )
    kube.post_event(account, "Warning", "Tested", "x" * 5000)
    answer = kube.core.list_namespaced_event(kube_namespace, _preload_content=False)
    (event,) = [e for e in json.loads(answer.data)["items"] if e["reason"] == "Tested"]
    assert event["source"]["component"] == "trainingrun-operator" == event["reportingComponent"]
    assert event["involvedObject"]["uid"] == account["metadata"]["uid"]
    assert len(event["message"]) <= 1024


@emulator_only  # a real garbage collector deletes objects whose owner does not exist
def test_delete_children_takes_only_what_the_run_owns(
    kube: Kube, kube_namespace: str, kube_api: KubeApi
) -> None:
    """The operator's own cleanup (clusters without a garbage collector): a real cluster's collector would
    remove these owner-less objects itself, so this runs against the emulator only."""
    ns = kube_namespace
    kube.create(owned("Job", "r-train", ns, "u-1", **JOB_SPEC))
    kube.create(owned("ServiceAccount", "r-trainer", ns, "u-1"))
    kube.create(owned("Role", "r-trainer", ns, "u-2", rules=[]))  # another run's: kept
    claim = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    kube.create(owned("PersistentVolumeClaim", "r-checkpoints", ns, "u-1", spec=claim))
    rt = Runtime.create(Settings(), kube)
    try:
        run = Run(namespace=ns, name="r", uid="u-1", spec=TrainingRunSpec.model_validate({"symbol": "SOL"}))
        assert delete_children(rt, run, []) == ["Job", "PersistentVolumeClaim", "ServiceAccount"]
        assert delete_children(rt, run, []) == []
    finally:
        rt.pool.shutdown()
    assert kube.read("Job", ns, "r-train") is None and kube.read("Role", ns, "r-trainer") is not None


def test_delete_with_a_uid_spares_a_newer_object_of_that_name(kube: Kube, kube_namespace: str) -> None:
    """A gang restart deletes the Job of the failed attempt by uid: never the next attempt's Job, which has the
    same name and may already exist."""
    ns = kube_namespace
    newer, _ = kube.create(owned("Job", "g-train", ns, "u-1", **JOB_SPEC))
    assert kube.delete("Job", ns, "g-train", uid="uid-of-the-failed-attempt") is False
    assert kube.read("Job", ns, "g-train") is not None
    assert kube.delete("Job", ns, "g-train", uid=newer["metadata"]["uid"]) is True
    assert kube.read("Job", ns, "g-train") is None
    assert kube.delete("Job", ns, "g-train", uid=newer["metadata"]["uid"]) is False


def test_services_are_a_child_kind(kube: Kube, kube_namespace: str) -> None:
    spec = {"clusterIP": "None", "selector": {"cryptopredictor.dev/run": "g"}, "ports": [{"port": 29500}]}
    service = owned("Service", "g-workers", kube_namespace, "u-1", spec=spec)
    assert kube.create(service)[1] is True and kube.create(service)[1] is False
    assert kube.read("Service", kube_namespace, "g-workers") is not None
    assert kube.delete("Service", kube_namespace, "g-workers") is True
