"""The operator (``python -m trainop``, a real subprocess) against the Kubernetes API emulator.

Job and pod status are driven through the API as the Job controller and kubelet would write them, so each
condition, reason, Event and metric is asserted deterministically. These tests need the emulator (they write pod
status); against a real cluster (KUBECONFIG set) they are skipped with that reason.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from trainop import builders

from tests.support.cluster import apply_crd, fresh_namespace
from tests.support.kubeemu.client import Api, ApiResponseError
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.kubeemu.kubelet import Kubelet, default_env
from tests.support.procs import stop_process
from tests.support.s3server import S3Server
from tests.support.waiting import wait_for
from trainer.status_report import StatusReporter

pytestmark = pytest.mark.e2e

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())
RUNS = "/apis/cryptopredictor.dev/v1alpha1/namespaces/{ns}/trainingruns"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Operator:
    """``python -m trainop`` with TRAINOP_* settings; restartable."""

    def __init__(self, kube: KubeApi, namespace: str, log: pathlib.Path) -> None:
        self.port = free_port()
        self.log_path = log
        self.env = {
            **os.environ,
            **kube.env,
            "PYTHONPATH": os.pathsep.join((str(ROOT), str(ROOT / "operator"))),  # this tree's trainop
            "TRAINOP_NAMESPACES": namespace,
            "TRAINOP_METRICS_HOST": "127.0.0.1",
            "TRAINOP_METRICS_PORT": str(self.port),
            "TRAINOP_CHECKPOINT_PREFIX": "s3://checkpoints/runs",
            "TRAINOP_S3_ENDPOINT": "http://minio.minio:9000",
            "TRAINOP_S3_SECRET_NAME": "s3-credentials",
            "TRAINOP_TIMER_INTERVAL_SECONDS": "0.5",
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trainop"], env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        log.close()
        wait_for("the operator's /healthz", self._healthy, timeout=60)

    def _healthy(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.log()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def stop(self) -> None:
        stop_process(self.proc, timeout=20)
        self.proc = None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture()
def api(kube_api: KubeApi) -> Api:
    if kube_api.real:
        pytest.skip("emulator only: writes pod/Job status itself; a real cluster has its own controllers")
    return kube_api.api


@pytest.fixture()
def ns(api: Api) -> Iterator[str]:
    with fresh_namespace(api, "op") as name:
        yield name


@pytest.fixture(scope="module")
def crd(kube_api: KubeApi) -> None:
    apply_crd(kube_api, ROOT / "manifests" / "crd.yaml", "trainingruns")


@pytest.fixture()
def operator(kube_api: KubeApi, crd: None, ns: str, tmp_path: pathlib.Path) -> Iterator[Operator]:
    op = Operator(kube_api, ns, tmp_path / "operator.log")
    op.start()
    yield op
    op.stop()


def create_run(api: Api, ns: str, name: str, **spec: Any) -> dict[str, Any]:
    body = json.loads(json.dumps(SAMPLE))
    body["metadata"] = {"name": name}
    body["spec"].update(spec)
    return dict(api.create(RUNS.format(ns=ns), body))


def get_run(api: Api, ns: str, name: str) -> dict[str, Any]:
    return dict(api.get(f"{RUNS.format(ns=ns)}/{name}"))


def run_status(api: Api, ns: str, name: str) -> dict[str, Any]:
    return dict(get_run(api, ns, name).get("status") or {})


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def wait_phase(
    api: Api, ns: str, name: str, phase: str, reason: str | None = None, timeout: float = 20
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        status = run_status(api, ns, name)
        ok = status.get("phase") == phase and (reason is None or status.get("reason") == reason)
        return status if ok else None

    return wait_for(f"{name} to be {phase}/{reason}", probe, timeout)


def jobs(api: Api, ns: str) -> list[dict[str, Any]]:
    return list(api.get(f"/apis/batch/v1/namespaces/{ns}/jobs")["items"])


def wait_job(api: Api, ns: str, name: str) -> dict[str, Any]:
    return wait_for(f"Job {name}", lambda: api.maybe_get(f"/apis/batch/v1/namespaces/{ns}/jobs/{name}"))


def events(api: Api, ns: str, name: str) -> list[tuple[str, str, str]]:
    items = api.get(f"/api/v1/namespaces/{ns}/events")["items"]
    return [
        (e.get("type", ""), e.get("reason", ""), e.get("message", ""))
        for e in items
        if (e.get("involvedObject") or {}).get("name") == name
    ]


def wait_event(api: Api, ns: str, name: str, reason: str) -> tuple[str, str, str]:
    return wait_for(
        f"Event {reason} on {name}", lambda: next((e for e in events(api, ns, name) if e[1] == reason), None)
    )


def make_pod(api: Api, ns: str, job: dict[str, Any], status: dict[str, Any], suffix: str = "a1b2c") -> str:
    """A pod as the Job controller creates it (labels, owner), then its status as the kubelet writes it."""
    name = f"{job['metadata']['name']}-{suffix}"
    labels = dict(job["spec"]["template"]["metadata"]["labels"], **{"job-name": job["metadata"]["name"]})
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels,
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
    set_pod_status(api, ns, name, status)
    return name


def set_pod_status(api: Api, ns: str, pod: str, status: dict[str, Any]) -> None:
    api.merge(f"/api/v1/namespaces/{ns}/pods/{pod}/status", {"status": status})


def set_job_status(api: Api, ns: str, job: str, status: dict[str, Any]) -> None:
    api.merge(f"/apis/batch/v1/namespaces/{ns}/jobs/{job}/status", {"status": status})


def container(state: dict[str, Any], restarts: int = 0) -> dict[str, Any]:
    return {
        "containerStatuses": [
            {
                "name": "trainer",
                "state": state,
                "restartCount": restarts,
                "ready": False,
                "image": "trainer",
                "imageID": "",
            }
        ]
    }


RUNNING_POD = {"phase": "Running", **container({"running": {"startedAt": "2026-01-01T00:00:00Z"}})}


def metric(text: str, family: str, /, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(family + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


# --- tests ---------------------------------------------------------------------------------------------------


def test_apply_creates_one_job_with_owner_rbac_and_status(api: Api, ns: str, operator: Operator) -> None:
    run = create_run(api, ns, "sol-tft")
    job = wait_job(api, ns, "sol-tft-train")
    assert job["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    assert job["metadata"]["labels"]["cryptopredictor.dev/run"] == "sol-tft"
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["command"] == builders.COMMAND  # pinned in test_operator_builders
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["TRAININGRUN_UID"]["value"] == run["metadata"]["uid"]
    assert json.loads(env["TRAININGRUN_MANIFEST"]["value"])["spec"]["checkpoint"]["uri"] == (
        f"s3://checkpoints/runs/{ns}/sol-tft"
    )
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-credentials"
    assert job["spec"]["podFailurePolicy"]["rules"][1]["onExitCodes"]["values"] == [2, 4]
    for kind in ("serviceaccounts", "roles", "rolebindings"):
        group = "/api/v1" if kind == "serviceaccounts" else "/apis/rbac.authorization.k8s.io/v1"
        child = api.get(f"{group}/namespaces/{ns}/{kind}/sol-tft-trainer")
        assert child["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]
    status = wait_phase(api, ns, "sol-tft", "Pending")
    assert condition(status, "JobCreated")["status"] == "True"
    assert status["jobName"] == "sol-tft-train"
    wait_event(api, ns, "sol-tft", "JobCreated")
    assert len(jobs(api, ns)) == 1


def test_schema_refuses_bad_values_at_the_api(api: Api, ns: str, crd: None) -> None:
    with pytest.raises(ApiResponseError) as err:
        create_run(api, ns, "bad", training={"epochs": 0})
    assert err.value.code == 422 and "epochs" in str(err.value)


def test_invalid_spec_fails_once_with_field_event_and_no_job(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "dup", symbols=["SOL", "BTC", "BTC"])  # schema-valid, model-invalid
    status = wait_phase(api, ns, "dup", "Failed", "InvalidSpec")
    assert "spec.symbols" in condition(status, "Failed")["message"]
    _, _, message = wait_event(api, ns, "dup", "InvalidSpec")
    assert message.startswith("spec.symbols")
    time.sleep(2)  # no retry loop: still one Event, no Job
    assert [e for e in events(api, ns, "dup") if e[1] == "InvalidSpec"] == [
        ("Warning", "InvalidSpec", message)
    ]
    assert jobs(api, ns) == []
    text = operator.metrics()
    assert metric(text, "trainingrun_failed_info", namespace=ns, name="dup", reason="InvalidSpec") == 1.0


def test_pod_and_job_status_drive_conditions_events_and_metrics(
    api: Api, ns: str, operator: Operator, monkeypatch: pytest.MonkeyPatch, kube_api: KubeApi
) -> None:
    create_run(api, ns, "sol-tft")
    job = wait_job(api, ns, "sol-tft-train")
    pod = make_pod(
        api,
        ns,
        job,
        {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                }
            ],
        },
    )
    status = wait_phase(api, ns, "sol-tft", "Pending", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in status["message"]
    wait_event(api, ns, "sol-tft", "Unschedulable")
    wait_for(
        "pending metric",
        lambda: (
            metric(
                operator.metrics(), "trainingrun_pending_reason_info", name="sol-tft", reason="Unschedulable"
            )
            == 1.0
        ),
    )

    set_pod_status(
        api,
        ns,
        pod,
        {
            "phase": "Pending",
            "conditions": [],
            **container({"waiting": {"reason": "ImagePullBackOff", "message": "no such"}}),
        },
    )
    wait_phase(api, ns, "sol-tft", "Pending", "ImagePullBackOff")

    set_job_status(api, ns, "sol-tft-train", {"active": 1, "startTime": "2026-01-01T00:00:00Z"})
    set_pod_status(api, ns, pod, RUNNING_POD)
    status = wait_phase(api, ns, "sol-tft", "Running")
    assert status["startTime"] == "2026-01-01T00:00:00Z"
    wait_event(api, ns, "sol-tft", "Running")

    # The trainer's side: the real StatusReporter, through the kubernetes client, against the same API.
    monkeypatch.setenv("KUBECONFIG", kube_api.env["KUBECONFIG"])
    reporter = StatusReporter.from_env(
        {"TRAININGRUN_NAME": "sol-tft", "TRAININGRUN_NAMESPACE": ns, "TRAINER_STATUS_THROTTLE_SECONDS": "10"}
    )
    assert reporter.enabled
    reporter.progress(
        epoch=41,
        total_epochs=100,
        train_loss=0.7,
        val_loss=0.5,
        val_mase=0.9,
        best_val_loss=0.45,
        best_epoch=39,
        samples_per_second=1000.0,
        eta_seconds=120.0,
    )
    reporter.checkpoint(
        latest="s3://checkpoints/runs/x/epoch-41.pt", best="s3://checkpoints/runs/x/best.pt", epoch=41
    )
    reporter.close()
    assert reporter.sent >= 1 and reporter.failed == 0  # bodies handed over while one is in flight merge
    status = run_status(api, ns, "sol-tft")
    assert status["progress"]["epochDisplay"] == "41/100" and status["checkpoint"]["epoch"] == 41
    assert status["phase"] == "Running", "the trainer's patch must not touch the operator's fields"
    wait_for("epoch metric", lambda: metric(operator.metrics(), "trainingrun_epoch", name="sol-tft") == 41.0)

    set_pod_status(
        api,
        ns,
        pod,
        {
            "phase": "Failed",
            **container(
                {"terminated": {"exitCode": 4, "reason": "Error", "finishedAt": "2026-01-01T01:00:00Z"}}
            ),
        },
    )
    set_job_status(
        api,
        ns,
        "sol-tft-train",
        {
            "active": 0,
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": "PodFailurePolicy",
                    "message": f"Container trainer for pod {ns}/{pod} failed with exit code 4 matching FailJob rule at index 1",
                    "lastTransitionTime": "2026-01-01T01:00:01Z",
                }
            ],
        },
    )
    status = wait_phase(api, ns, "sol-tft", "Failed", "NaNLoss")
    assert status["restarts"] == 1 and status["completionTime"]
    wait_event(api, ns, "sol-tft", "NaNLoss")
    text = wait_for(
        "failure metrics",
        lambda: (
            lambda t: (
                t if metric(t, "trainingrun_failed_info", name="sol-tft", reason="NaNLoss") == 1.0 else None
            )
        )(operator.metrics()),
    )
    assert metric(text, "trainingrun_failures_total", namespace=ns, reason="NaNLoss") == 1.0
    assert metric(text, "trainingrun_phase", name="sol-tft", phase="Failed") == 1.0
    assert metric(text, "trainingrun_phase", name="sol-tft", phase="Running") == 0.0


@pytest.mark.parametrize(
    ("job_reason", "terminated", "expected"),
    [
        ("BackoffLimitExceeded", {"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled"),
        ("DeadlineExceeded", None, "DeadlineExceeded"),
        ("PodFailurePolicy", {"exitCode": 2, "reason": "Error"}, "InvalidConfig"),
    ],
)
def test_failure_reasons(
    api: Api, ns: str, operator: Operator, job_reason: str, terminated: dict[str, Any] | None, expected: str
) -> None:
    create_run(api, ns, "r")
    job = wait_job(api, ns, "r-train")
    if terminated:
        make_pod(api, ns, job, {"phase": "Failed", **container({"terminated": terminated})})
    set_job_status(
        api,
        ns,
        "r-train",
        {
            "failed": 1,
            "conditions": [
                {
                    "type": "Failed",
                    "status": "True",
                    "reason": job_reason,
                    "message": "the Job failed",
                    "lastTransitionTime": "2026-01-01T01:00:01Z",
                }
            ],
        },
    )
    wait_phase(api, ns, "r", "Failed", expected)
    assert ("Warning", expected) in [
        (e[0], e[1])
        for e in wait_for(
            f"Event {expected}",
            lambda: [e for e in events(api, ns, "r") if e[1] == expected] and events(api, ns, "r"),
        )
    ]


def test_fixing_an_invalid_spec_creates_the_job(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "fix", symbols=["SOL", "SOL"])
    wait_phase(api, ns, "fix", "Failed", "InvalidSpec")
    api.merge(f"{RUNS.format(ns=ns)}/fix", {"spec": {"symbols": ["SOL", "BTC"]}})
    job = wait_job(api, ns, "fix-train")
    manifest = next(
        e
        for e in job["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "TRAININGRUN_MANIFEST"
    )
    assert json.loads(manifest["value"])["spec"]["symbols"] == ["SOL", "BTC"]
    status = wait_phase(api, ns, "fix", "Pending")
    assert condition(status, "Failed")["status"] == "False"
    assert ("Normal", "JobCreated") in [(e[0], e[1]) for e in events(api, ns, "fix")]


def test_spec_change_after_creation_is_announced(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "chg")
    wait_job(api, ns, "chg-train")
    wait_phase(api, ns, "chg", "Pending")
    api.merge(f"{RUNS.format(ns=ns)}/chg", {"spec": {"training": {"epochs": 5}}})
    _, _, message = wait_event(api, ns, "chg", "SpecChangeIgnored")
    assert "spec.training.epochs" in message
    assert len(jobs(api, ns)) == 1


def test_succeeded(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "ok")
    wait_job(api, ns, "ok-train")
    set_job_status(
        api,
        ns,
        "ok-train",
        {
            "succeeded": 1,
            "completionTime": "2026-01-01T02:00:00Z",
            "conditions": [
                {
                    "type": "Complete",
                    "status": "True",
                    "reason": "CompletionsReached",
                    "message": "done",
                    "lastTransitionTime": "2026-01-01T02:00:00Z",
                }
            ],
        },
    )
    status = wait_phase(api, ns, "ok", "Succeeded")
    assert status["completionTime"] == "2026-01-01T02:00:00Z"
    wait_event(api, ns, "ok", "Succeeded")
    wait_for(
        "succeeded counter",
        lambda: metric(operator.metrics(), "trainingrun_succeeded_total", namespace=ns) == 1.0,
    )


def test_operator_restart_makes_no_second_job(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "a")
    wait_job(api, ns, "a-train")
    operator.stop()
    create_run(api, ns, "b")  # created while the operator is down
    operator.start()
    wait_job(api, ns, "b-train")
    operator.stop()
    # Restarted with other settings (no checkpoint prefix): existing runs keep their Jobs and stay valid.
    del operator.env["TRAINOP_CHECKPOINT_PREFIX"]
    operator.start()
    time.sleep(2)  # resume handlers have run for both
    names = sorted(j["metadata"]["name"] for j in jobs(api, ns))
    assert names == ["a-train", "b-train"]
    assert run_status(api, ns, "a")["phase"] == "Pending" and run_status(api, ns, "b")["phase"] == "Pending"
    assert "Traceback" not in operator.log()
    assert operator.log().count("Job a-train ready") == 3, "created, then resumed twice"


def test_suspend_and_resume(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "s")
    wait_job(api, ns, "s-train")
    api.merge(f"{RUNS.format(ns=ns)}/s", {"spec": {"suspend": True}})
    wait_for("Job suspended", lambda: wait_job(api, ns, "s-train")["spec"]["suspend"] is True)
    status = wait_phase(api, ns, "s", "Suspended")
    assert condition(status, "Suspended")["reason"] == "SuspendedByUser"
    wait_event(api, ns, "s", "Suspended")
    api.merge(f"{RUNS.format(ns=ns)}/s", {"spec": {"suspend": False}})
    wait_for("Job resumed", lambda: wait_job(api, ns, "s-train")["spec"]["suspend"] is False)
    wait_phase(api, ns, "s", "Pending")
    wait_event(api, ns, "s", "Resumed")
    assert len(jobs(api, ns)) == 1


def test_delete_removes_children_and_series(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "d")
    job = wait_job(api, ns, "d-train")
    pod = make_pod(api, ns, job, RUNNING_POD)
    wait_phase(api, ns, "d", "Running")
    wait_for(
        "series", lambda: metric(operator.metrics(), "trainingrun_phase", name="d", phase="Running") == 1.0
    )
    api.delete(f"{RUNS.format(ns=ns)}/d")
    wait_for("run gone", lambda: api.maybe_get(f"{RUNS.format(ns=ns)}/d") is None)
    for url in (
        f"/apis/batch/v1/namespaces/{ns}/jobs/d-train",
        f"/api/v1/namespaces/{ns}/pods/{pod}",
        f"/api/v1/namespaces/{ns}/serviceaccounts/d-trainer",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/d-trainer",
        f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/d-trainer",
    ):
        wait_for(f"{url} deleted", lambda url=url: api.maybe_get(url) is None)  # type: ignore[misc]
    wait_for("series removed", lambda: 'name="d"' not in operator.metrics())


CHILD_URLS = (
    "/apis/batch/v1/namespaces/{ns}/jobs/{run}-train",
    "/api/v1/namespaces/{ns}/serviceaccounts/{run}-trainer",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles/{run}-trainer",
    "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings/{run}-trainer",
)


def test_delete_completes_while_the_operator_is_down(api: Api, ns: str, operator: Operator) -> None:
    """No finalizer: ``kubectl delete tr`` never waits for the operator; owner references (the emulator's
    garbage collector) take the Job and the per-run RBAC with it."""
    create_run(api, ns, "gone")
    job = wait_job(api, ns, "gone-train")
    make_pod(api, ns, job, RUNNING_POD)
    wait_phase(api, ns, "gone", "Running")
    assert not get_run(api, ns, "gone")["metadata"].get("finalizers")
    operator.stop()
    api.delete(f"{RUNS.format(ns=ns)}/gone")
    wait_for("run gone", lambda: api.maybe_get(f"{RUNS.format(ns=ns)}/gone") is None, timeout=5)
    for url in CHILD_URLS:
        url = url.format(ns=ns, run="gone")
        wait_for(f"{url} deleted", lambda url=url: api.maybe_get(url) is None, timeout=5)  # type: ignore[misc]
    assert api.get(f"/api/v1/namespaces/{ns}/pods")["items"] == []


def test_the_old_finalizer_is_removed(api: Api, ns: str, operator: Operator) -> None:
    """Runs of an earlier operator version carry its finalizer; this version takes it off."""
    operator.stop()
    body = json.loads(json.dumps(SAMPLE))
    body["metadata"] = {"name": "old", "finalizers": ["cryptopredictor.dev/trainop-cleanup"]}
    api.create(RUNS.format(ns=ns), body)
    operator.start()
    wait_job(api, ns, "old-train")
    wait_for(
        "the finalizer removed",
        lambda: not get_run(api, ns, "old")["metadata"].get("finalizers"),
    )
    api.delete(f"{RUNS.format(ns=ns)}/old")
    wait_for("run gone", lambda: api.maybe_get(f"{RUNS.format(ns=ns)}/old") is None)


def test_logs_are_json_with_the_run_and_events_name_the_operator(
    api: Api, ns: str, operator: Operator
) -> None:
    create_run(api, ns, "lg")
    wait_job(api, ns, "lg-train")
    wait_event(api, ns, "lg", "JobCreated")
    items = api.get(f"/api/v1/namespaces/{ns}/events")["items"]
    sources = {e["source"]["component"] for e in items if e["involvedObject"]["name"] == "lg"}
    assert sources == {"trainingrun-operator"}
    assert {e["reportingComponent"] for e in items} == {"trainingrun-operator"}
    lines = [json.loads(line) for line in operator.log().splitlines()]  # every line is JSON (not a TTY)
    about = [line for line in lines if (line.get("object") or {}).get("kind") == "TrainingRun"]
    assert about and all(line["run"] == {"namespace": ns, "name": "lg"} for line in about)
    ready = next(line for line in lines if line["message"].startswith("Job lg-train ready"))
    assert ready["run"] == {"namespace": ns, "name": "lg"} and ready["severity"] == "info"


def test_stall_marked_and_cleared(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "st", stallTimeout="2s")
    job = wait_job(api, ns, "st-train")
    make_pod(api, ns, job, RUNNING_POD)
    wait_phase(api, ns, "st", "Running")
    status = wait_for(
        "Stalled",
        lambda: (lambda s: s if condition(s, "Stalled").get("status") == "True" else None)(
            run_status(api, ns, "st")
        ),
        timeout=15,
    )
    assert condition(status, "Stalled")["reason"] == "NoProgress" and status["phase"] == "Running"
    wait_event(api, ns, "st", "Stalled")
    wait_for("stalled metric", lambda: metric(operator.metrics(), "trainingrun_stalled", name="st") == 1.0)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    api.merge(
        f"{RUNS.format(ns=ns)}/st/status", {"status": {"progress": {"epoch": 2, "lastProgressTime": now}}}
    )
    wait_for(
        "Stalled cleared",
        lambda: condition(run_status(api, ns, "st"), "Stalled").get("status") == "False",
        timeout=15,
    )
    wait_event(api, ns, "st", "ProgressResumed")
    assert re.search(r"trainingrun_stalled\{[^}]*name=\"st\"[^}]*\} 0\.0", operator.metrics())


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_end_to_end_with_the_real_trainer(
    api: Api, ns: str, operator: Operator, kube_api: KubeApi, tmp_path: pathlib.Path, s3_server: S3Server
) -> None:
    """TrainingRun -> operator -> Job -> the kubelet harness runs ``python -m trainer run --manifest-env`` ->
    the trainer's StatusReporter patches progress -> the operator marks the run Succeeded. Checkpoints go to
    S3: the operator refuses a pod-local checkpoint uri (lost with the pod)."""
    env = {
        **default_env(),
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "KUBECONFIG": kube_api.env["KUBECONFIG"],
        "MPLBACKEND": "Agg",
    }
    secret = {
        "metadata": {"name": "s3-credentials"},
        "stringData": {
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        },
    }
    api.create(f"/api/v1/namespaces/{ns}/secrets", secret)  # the operator's default secret
    bucket = s3_server.create_bucket()
    with Kubelet(api, tmp_path / "kubelet", extra_env=env, namespace=ns) as kubelet:
        create_run(
            api,
            ns,
            "e2e",
            symbols=["SOL"],
            data={"inputWindow": 16, "horizon": 3, "start": "2024-01-01"},
            model={"hiddenSize": 8, "attentionHeads": 2},
            training={"epochs": 2, "batchSize": 256, "device": "cpu", "warmupEpochs": 0},
            checkpoint={"uri": f"s3://{bucket}/e2e", "s3Endpoint": s3_server.endpoint},
            backoffLimit=0,
        )
        try:
            status = wait_phase(api, ns, "e2e", "Succeeded", timeout=200)
        except AssertionError:
            logs = "\n".join(kubelet.logs(p)[-3000:] for p in kubelet.runs)
            raise AssertionError(f"{run_status(api, ns, 'e2e')}\n{logs}\n{kubelet.errors[:3]}") from None
    progress = status["progress"]
    assert progress["epoch"] == 2 and progress["epochDisplay"] == "2/2" and progress["lastProgressTime"]
    assert status["checkpoint"]["latest"].startswith(f"s3://{bucket}/e2e/checkpoints/epoch-")
    assert status["metrics"]["valMase"] > 0
    assert condition(status, "Succeeded")["status"] == "True" and status["restarts"] == 0
    text = operator.metrics()
    assert metric(text, "trainingrun_epoch", name="e2e") == 2.0
    assert metric(text, "trainingrun_phase", name="e2e", phase="Succeeded") == 1.0
