"""Fidelity of the Kubernetes API emulator (tests/support/kubeemu): the API-server behaviours kopf, kubectl and the
operator rely on. Runs against the emulator only (a real cluster is not the thing under test here)."""

from __future__ import annotations

import pathlib
import re
import threading
import time
from typing import Any

import pytest
import yaml

from tests.support.kubeemu.client import Api
from tests.support.kubeemu.fixtures import KubeApi, kube_api, kube_namespace  # noqa: F401

REPO = pathlib.Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((REPO / "manifests/crd.yaml").read_text())
SAMPLE = yaml.safe_load((REPO / "manifests/samples/sol-run.yaml").read_text())
TR = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingruns"


@pytest.fixture()
def api(kube_api: KubeApi) -> Api:  # noqa: F811
    if kube_api.real:
        pytest.fail("tests/support/test_kubeemu.py tests the emulator; unset KUBECONFIG to run it")
    return kube_api.api


@pytest.fixture()
def crd(api: Api) -> None:
    if (
        api.maybe_get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD['metadata']['name']}")
        is None
    ):
        api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", CRD)


def cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def test_metadata_uid_rv_generation(api: Api, kube_namespace: str, crd: None) -> None:  # noqa: F811
    base = TR.format(ns=kube_namespace)
    created = api.create(base, SAMPLE)
    meta = created["metadata"]
    assert len(meta["uid"]) == 36 and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    rv1 = int(meta["resourceVersion"])
    labelled = api.merge(f"{base}/sol-tft", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1 and int(labelled["metadata"]["resourceVersion"]) > rv1
    spec = api.merge(f"{base}/sol-tft", {"spec": {"training": {"epochs": 5}}})
    assert spec["metadata"]["generation"] == 2
    status = api.merge(f"{base}/sol-tft/status", {"status": {"phase": "Running"}})
    assert status["metadata"]["generation"] == 2 and status["status"]["phase"] == "Running"
    assert status["metadata"]["uid"] == meta["uid"]
    noop = api.merge(f"{base}/sol-tft", {"spec": {"training": {"epochs": 5}}})
    assert noop["metadata"]["resourceVersion"] == status["metadata"]["resourceVersion"]  # no-op: no new rv
    code, body = api.call("POST", base, SAMPLE)
    assert (code, body["kind"], body["reason"]) == (409, "Status", "AlreadyExists")
    code, body = api.call("GET", f"{base}/nope")
    assert (code, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'trainingruns.cryptopredictor.dev "nope" not found',
    )
    generated = api.create(
        f"/api/v1/namespaces/{kube_namespace}/configmaps", {"metadata": {"generateName": "x-"}}
    )
    assert generated["metadata"]["name"].startswith("x-") and len(generated["metadata"]["name"]) == 7


def test_conflicts_and_json_patch(api: Api, kube_namespace: str) -> None:  # noqa: F811
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    obj = api.create(base, cm("c", k="1"))
    stale = obj["metadata"]["resourceVersion"]
    api.merge(f"{base}/c", {"data": {"k": "2"}})
    code, body = api.call(
        "PUT", f"{base}/c", cm("c", k="3") | {"metadata": {"name": "c", "resourceVersion": stale}}
    )
    assert (code, body["reason"]) == (409, "Conflict")
    code, body = api.call(
        "PATCH",
        f"{base}/c",
        {"metadata": {"resourceVersion": stale}, "data": {"k": "4"}},
        "application/merge-patch+json",
    )
    assert code == 409
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": stale},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    code, body = api.call("PATCH", f"{base}/c", ops, "application/json-patch+json")
    assert (code, body["kind"]) == (422, "Status")
    fresh = api.get(f"{base}/c")["metadata"]["resourceVersion"]
    ops[0]["value"] = fresh
    assert api.ok("PATCH", f"{base}/c", ops, "application/json-patch+json")["metadata"]["finalizers"] == [
        "x/y"
    ]
    replaced = api.ok("PUT", f"{base}/c", cm("c", k="5"))
    assert replaced["data"] == {"k": "5"} and "finalizers" not in replaced["metadata"]
    smp = api.ok("PATCH", f"{base}/c", {"data": {"j": "1"}}, "application/strategic-merge-patch+json")
    assert smp["data"] == {"k": "5", "j": "1"}


def test_status_subresource_separated(api: Api, kube_namespace: str, crd: None) -> None:  # noqa: F811
    base = TR.format(ns=kube_namespace)
    created = api.create(base, SAMPLE | {"status": {"phase": "Failed"}})
    assert "status" not in created  # status is dropped on create for status-subresource CRDs
    api.merge(f"{base}/sol-tft/status", {"status": {"phase": "Running"}})
    main = api.merge(
        f"{base}/sol-tft", {"status": {"phase": "Succeeded"}, "metadata": {"labels": {"x": "y"}}}
    )
    assert main["status"]["phase"] == "Running" and main["metadata"]["labels"] == {"x": "y"}
    sub = api.merge(f"{base}/sol-tft/status", {"spec": {"symbol": "BTC"}, "status": {"phase": "Pending"}})
    assert sub["spec"]["symbol"] == "SOL" and sub["status"]["phase"] == "Pending"


def test_label_and_field_selectors(api: Api, kube_namespace: str) -> None:  # noqa: F811
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    for name, labels in [
        ("a", {"app": "x", "tier": "1"}),
        ("b", {"app": "y"}),
        ("c", {"app": "z", "tier": "2"}),
    ]:
        api.create(base, cm(name, labels))

    def names(query: str) -> list[str]:
        return [o["metadata"]["name"] for o in api.get(f"{base}?{query}")["items"]]

    assert names("labelSelector=app=x") == ["a"]
    assert names("labelSelector=app!=x") == ["b", "c"]
    assert names("labelSelector=app%20in%20(x,z)") == ["a", "c"]
    assert names("labelSelector=app%20notin%20(x,z)") == ["b"]
    assert names("labelSelector=tier") == ["a", "c"]
    assert names("labelSelector=!tier") == ["b"]
    assert names("labelSelector=tier,app!=z") == ["a"]
    assert names("fieldSelector=metadata.name=b") == ["b"]
    listing = api.get(f"/api/v1/configmaps?fieldSelector=metadata.namespace={kube_namespace}")
    assert listing["kind"] == "ConfigMapList" and listing["apiVersion"] == "v1"
    assert int(listing["metadata"]["resourceVersion"]) > 0 and len(listing["items"]) == 3


def test_crd_validation_names_the_field(api: Api, kube_namespace: str, crd: None) -> None:  # noqa: F811
    base = TR.format(ns=kube_namespace)
    bad = yaml.safe_load(yaml.safe_dump(SAMPLE))
    bad["spec"]["training"]["epochs"] = 0
    code, body = api.call("POST", base, bad)
    assert (code, body["reason"]) == (422, "Invalid")
    assert body["message"] == (
        'TrainingRun.cryptopredictor.dev "sol-tft" is invalid: spec.training.epochs: '
        "Invalid value: 0: spec.training.epochs in body should be greater than or equal to 1"
    )
    assert body["details"]["causes"][0]["field"] == "spec.training.epochs"
    minimal = api.create(
        base,
        {
            "apiVersion": "cryptopredictor.dev/v1alpha1",
            "kind": "TrainingRun",
            "metadata": {"name": "m"},
            "spec": {"symbol": "BTC", "junk": 1, "training": {}, "data": {}},
        },
    )
    assert (
        minimal["spec"]["training"]["epochs"] == 100 and minimal["spec"]["data"]["horizon"] == 7
    )  # defaults
    assert "junk" not in minimal["spec"]  # pruned
    code, body = api.call("POST", base, {"metadata": {"name": "n"}, "spec": {}})
    assert code == 422 and "spec.symbol: Required value" in body["message"]


def test_discovery_lists_builtins_and_crds(api: Api, crd: None) -> None:
    core = {r["name"] for r in api.get("/api/v1")["resources"]}
    assert {"namespaces", "pods", "events", "serviceaccounts", "secrets", "configmaps"} <= core
    groups = {g["name"] for g in api.get("/apis")["groups"]}
    assert {
        "batch",
        "rbac.authorization.k8s.io",
        "apiextensions.k8s.io",
        "coordination.k8s.io",
        "events.k8s.io",
        "cryptopredictor.dev",
    } <= groups
    tr = [
        r for r in api.get("/apis/cryptopredictor.dev/v1alpha1")["resources"] if r["name"] == "trainingruns"
    ]
    assert tr[0]["kind"] == "TrainingRun" and tr[0]["shortNames"] == ["tr"] and tr[0]["namespaced"] is True
    assert any(ns["metadata"]["name"] == "default" for ns in api.get("/api/v1/namespaces")["items"])


def test_watch_events_in_order(api: Api, kube_namespace: str) -> None:  # noqa: F811
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    start = api.get(base)["metadata"]["resourceVersion"]
    api.create(base, cm("w"))
    api.merge(f"{base}/w", {"data": {"a": "1"}})
    api.delete(f"{base}/w")
    events = list(api.watch(base, timeout=1, resourceVersion=start))
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    received: list[dict[str, Any]] = []
    watcher = threading.Thread(
        target=lambda: received.extend(api.watch(base, timeout=2, labelSelector="w=1"))
    )
    watcher.start()
    time.sleep(0.5)
    api.create(base, cm("w1", {"w": "1"}))
    api.create(base, cm("w2", {"w": "2"}))
    watcher.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in received] == [("ADDED", "w1")]


def test_owner_gc_and_finalizers(api: Api, kube_namespace: str) -> None:  # noqa: F811
    base = f"/api/v1/namespaces/{kube_namespace}/configmaps"
    owner = api.create(base, cm("owner"))
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}
    api.create(base, {"metadata": {"name": "child", "ownerReferences": [ref]}})
    api.create(base, {"metadata": {"name": "kept", "ownerReferences": [ref], "finalizers": ["t/x"]}})
    code, body = api.call("POST", base, {"metadata": {"name": "bad", "ownerReferences": [ref | {"uid": ""}]}})
    assert code == 422 and "ownerReferences" in body["message"]
    api.delete(f"{base}/owner")
    assert api.maybe_get(f"{base}/owner") is None and api.maybe_get(f"{base}/child") is None
    kept = api.get(f"{base}/kept")
    assert kept["metadata"]["deletionTimestamp"]  # finalizer holds it
    code, _ = api.call(
        "PATCH", f"{base}/kept", {"metadata": {"finalizers": ["t/x", "t/y"]}}, "application/merge-patch+json"
    )
    assert code == 422  # no new finalizers on a deleting object
    api.merge(f"{base}/kept", {"metadata": {"finalizers": None}})
    assert api.maybe_get(f"{base}/kept") is None
    orphan_owner = api.create(base, cm("o2"))
    ref2 = ref | {"name": "o2", "uid": orphan_owner["metadata"]["uid"]}
    api.create(base, {"metadata": {"name": "orphan", "ownerReferences": [ref2]}})
    api.delete(f"{base}/o2", {"propagationPolicy": "Orphan"})
    assert api.get(f"{base}/orphan")["metadata"].get("ownerReferences", []) == []


def test_namespace_deletion_removes_contents(api: Api) -> None:
    api.create("/api/v1/namespaces", {"metadata": {"name": "gone-soon"}})
    api.create("/api/v1/namespaces/gone-soon/configmaps", cm("x"))
    api.delete("/api/v1/namespaces/gone-soon")
    assert api.maybe_get("/api/v1/namespaces/gone-soon/configmaps/x") is None


def test_kubectl_crd_sample_and_tables(kube_api: KubeApi, kube_namespace: str) -> None:  # noqa: F811
    ns = ["-n", kube_namespace]
    assert "created" in kube_api.kubectl("apply", "-f", str(REPO / "manifests/crd.yaml")).stdout + "created"
    out = kube_api.kubectl("apply", *ns, "-f", str(REPO / "manifests/samples/sol-run.yaml")).stdout
    assert "trainingrun.cryptopredictor.dev/sol-tft created" in out
    kube_api.kubectl(
        "patch",
        *ns,
        "tr",
        "sol-tft",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"phase": "Running", "progress": {"epochDisplay": "3/100", "valLoss": 0.25}}}',
    )
    table = kube_api.kubectl("get", *ns, "tr").stdout.splitlines()
    assert table[0].split() == ["NAME", "SYMBOL", "PHASE", "EPOCH", "VAL-LOSS", "BEST", "AGE"]
    assert table[1].split()[:5] == ["sol-tft", "SOL", "Running", "3/100", "0.25"]
    assert table[1].split()[-1].endswith("s")  # age
    wide = kube_api.kubectl("get", *ns, "trainingruns", "-o", "wide").stdout.splitlines()[0].split()
    assert wide[-5:] == ["MASE", "RESTARTS", "WORKERS", "FOLDS", "JOB"]
    assert (
        "unchanged"
        in kube_api.kubectl("apply", *ns, "-f", str(REPO / "manifests/samples/sol-run.yaml")).stdout
    )
    assert re.search(r"Symbol:\s+SOL", kube_api.kubectl("describe", *ns, "tr", "sol-tft").stdout)
    assert "deleted" in kube_api.kubectl("delete", *ns, "tr", "sol-tft").stdout
    assert "No resources found" in kube_api.kubectl("get", *ns, "tr").stderr


def test_kubectl_builtins(kube_api: KubeApi, kube_namespace: str, tmp_path: pathlib.Path) -> None:  # noqa: F811
    manifest = tmp_path / "objs.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": "s3"},
                    "stringData": {"KEY": "abc"},
                },
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "metadata": {"name": "j"},
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "c", "image": "x", "command": ["true"]}],
                            }
                        }
                    },
                },
            ]
        )
    )
    out = kube_api.kubectl("apply", "-n", kube_namespace, "-f", str(manifest)).stdout
    assert "secret/s3 created" in out and "job.batch/j created" in out
    data = kube_api.kubectl("get", "-n", kube_namespace, "secret", "s3", "-o", "jsonpath={.data.KEY}").stdout
    assert data == "YWJj"
    assert "j" in kube_api.kubectl("get", "-n", kube_namespace, "jobs").stdout
    assert "Name:" in kube_api.kubectl("describe", "-n", kube_namespace, "job", "j").stdout
    assert "deleted" in kube_api.kubectl("delete", "-n", kube_namespace, "-f", str(manifest)).stdout
