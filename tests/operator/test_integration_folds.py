# ruff: noqa: F811  (the api/ns/crd/operator fixtures are imported from the integration tests and used as parameters)
"""A walk-forward run against the API emulator: its Indexed Job of one pod per fold, the folds' pods ending with
their statistics as termination messages, the pooled metrics in the status, and the rows surviving the pods.

As in ``test_integration``, pod and Job status are written through the API as the kubelet and the Job
controller would write them (no trainer processes): each fold's pod terminates with ``FoldStats.message()``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.operator.test_integration import (  # noqa: F401 (fixtures)
    RUNNING_POD,
    Operator,
    api,
    condition,
    container,
    crd,
    create_run,
    ns,
    operator,
    run_status,
    set_job_status,
    set_pod_status,
    wait_job,
    wait_phase,
)
from tests.support.kubeemu.client import Api
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.waiting import wait_for
from trainer.api.foldstats import BandSums, FoldStats, pooled
from trainer.api.status import significant

pytestmark = pytest.mark.e2e
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
# 3 folds of first-target days: 2025-05-20..06-03, 06-04..06-18, 06-19..06-24 (the last one short).
WALK_FORWARD = {"start": "2025-05-20", "end": "2025-06-30", "refitEvery": "15d", "parallelism": 2}
FOLDS = [("2025-05-20", "2025-06-03"), ("2025-06-04", "2025-06-18"), ("2025-06-19", "2025-06-24")]


def fold_stats(index: int) -> FoldStats:
    """Fold ``index``'s sums as its pod would report them (the folds differ, the last is shorter)."""
    n = (15, 15, 6)[index]
    points, k = n * 7, 1.0 + 0.17 * index

    def band(scale: float) -> BandSums:
        pinball = [0.21 * points * k * scale, 0.37 * points * k * scale, 0.19 * points * k * scale]
        return BandSums(
            abs_err=0.93 * points * k * scale, pinball=pinball, covered=int(points * 0.8), width=0.2 * points
        )

    return FoldStats(
        index=index,
        start=FOLDS[index][0],
        end=FOLDS[index][1],
        n=n,
        horizon=7,
        quantiles=[0.1, 0.5, 0.9],
        model=band(1.0),
        baselines={"empirical": band(1.2), "ewma": band(1.1), "garch": band(1.05)},
        naive_abs_err=points * k,
        sq_err=1.4 * points * k,
        abs_pct_err=0.011 * points * k,
        da_hits={"1": n // 2, "7": n // 2 + 1},
        median="learned",
        band="learned",
        epochs=5,
        train_seconds=12.25,
    )


def fold_pod(api: Api, ns: str, job: dict[str, Any], index: int) -> str:
    """Fold ``index``'s pod as the Job controller creates it (labels with the completion index, owner)."""
    name = f"{job['metadata']['name']}-{index}-x{index}y{index}z"
    labels = dict(job["spec"]["template"]["metadata"]["labels"])
    labels.update({"job-name": job["metadata"]["name"], INDEX_KEY: str(index)})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {INDEX_KEY: str(index)},
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": job["metadata"]["name"],
                    "uid": job["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": job["spec"]["template"]["spec"],
    }
    api.create(f"/api/v1/namespaces/{ns}/pods", pod)
    set_pod_status(api, ns, name, RUNNING_POD)
    return name


def succeeded(message: str) -> dict[str, Any]:
    term = {
        "exitCode": 0,
        "reason": "Completed",
        "message": message,
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T01:00:00Z",
    }
    return {"phase": "Succeeded", **container({"terminated": term})}


def test_three_folds_pool_into_the_status(api: Api, ns: str, operator: Operator, kube_api: KubeApi) -> None:
    create_run(api, ns, "wf", walkForward=WALK_FORWARD)
    job = wait_job(api, ns, "wf-train")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 3, 2)
    assert (
        spec["backoffLimitPerIndex"] == 2 and spec["maxFailedIndexes"] == 0
    )  # (backoffLimit: the API's default)
    assert spec["template"]["spec"]["containers"][0]["command"][:4] == ["python", "-m", "trainer", "fold"]
    pods = [fold_pod(api, ns, job, i) for i in (2, 0)]  # out of order, two at a time
    status = wait_for(
        "two folds running",
        lambda: (
            lambda s: s if "2 of 3 folds running" in condition(s, "Running").get("message", "") else None
        )(run_status(api, ns, "wf")),
    )
    assert (status["phase"], status["reason"], status["foldsDisplay"]) == ("Running", "FoldsRunning", "0/3")

    set_pod_status(api, ns, pods[0], succeeded(fold_stats(2).message()))
    wait_for("fold 2 recorded", lambda: run_status(api, ns, "wf").get("foldsDisplay") == "1/3")
    pods.append(fold_pod(api, ns, job, 1))
    for name, index in ((pods[1], 0), (pods[2], 1)):
        set_pod_status(api, ns, name, succeeded(fold_stats(index).message()))
    done = {
        "type": "Complete",
        "status": "True",
        "reason": "CompletionsReached",
        "message": "Reached expected number of succeeded pods",
        "lastTransitionTime": "2026-01-01T01:00:05Z",
    }
    set_job_status(api, ns, "wf-train", {"succeeded": 3, "completedIndexes": "0-2", "conditions": [done]})
    status = wait_phase(api, ns, "wf", "Succeeded", "Completed")

    assert status["foldsDisplay"] == "3/3"
    rows = status["folds"]
    assert [(r["index"], r["phase"], r["start"], r["end"]) for r in rows] == [
        (i, "Succeeded", *FOLDS[i]) for i in range(3)
    ]
    assert [FoldStats.model_validate(r["stats"]) for r in rows] == [fold_stats(i) for i in range(3)]
    p = pooled([fold_stats(i) for i in range(3)])
    expected = {
        "valMae": p["mae"],
        "valMase": p["mase"],
        "coverage80": p["coverage_80"],
        "pinball": p["pinball"],
        "empiricalPinball": p["baselines"]["empirical"]["pinball"],
        "ewmaPinball": p["baselines"]["ewma"]["pinball"],
        "garchPinball": p["baselines"]["garch"]["pinball"],
        "skillVsGarch": p["baselines"]["garch"]["skill"],
    }
    assert status["metrics"] == {
        **{k: significant(v) for k, v in expected.items()},
        "foldsDone": 3,
        "foldsTotal": 3,
    }
    wide = kube_api.kubectl("get", "tr", "wf", "-n", ns, "-o", "wide").stdout.splitlines()
    at = wide[0].index("FOLDS")  # columns are aligned; empty ones (EPOCH...) print as blanks
    assert wide[1][at:].split()[0] == "3/3" and wide[1].split()[:2] == ["wf", "SOL"]

    for name in pods:  # the pods go (a TTL, the garbage collector): the recorded folds stay
        api.delete(f"/api/v1/namespaces/{ns}/pods/{name}")
    version = api.get(f"/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingruns/wf")["metadata"]
    time.sleep(2)
    after = api.get(f"/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingruns/wf")
    assert after["status"]["folds"] == rows and after["status"]["metrics"] == status["metrics"]
    assert after["metadata"]["resourceVersion"] == version["resourceVersion"], "no write: nothing changed"
    assert "Traceback" not in operator.log()
