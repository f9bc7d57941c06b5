# ruff: noqa: F811  (the api/ns/crd/operator fixtures are imported from the integration tests and used as parameters)
"""A multi-worker run against the API emulator: its Indexed Job and headless Service, a worker's failure
restarting the whole gang once, and an operator restarted half-way through a gang restart.

As in ``test_integration``, pod and Job status are written through the API as the kubelet and the Job
controller would write them (no trainer processes): worker 1 is killed, worker 0 loses its peer, the Job
fails at once (``backoffLimit: 0``).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.operator.test_integration import (  # noqa: F401 (fixtures)
    RUNNING_POD,
    RUNS,
    Operator,
    api,
    condition,
    container,
    crd,
    create_run,
    events,
    jobs,
    make_pod,
    ns,
    operator,
    run_status,
    set_job_status,
    wait_event,
    wait_phase,
)
from tests.support.kubeemu.client import Api
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e
ATTEMPT = "cryptopredictor.dev/attempt"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"


def job_of_attempt(api: Api, ns: str, name: str, attempt: int) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        job = api.maybe_get(f"{JOBS.format(ns=ns)}/{name}")
        return job if job and job["metadata"]["labels"].get(ATTEMPT) == str(attempt) else None

    return wait_for(f"Job {name} of attempt {attempt}", probe)


def worker(api: Api, ns: str, job: dict[str, Any], index: int, status: dict[str, Any]) -> str:
    """Worker ``index``'s pod as the Job controller names it (``<job>-<index>-<random>``)."""
    return make_pod(api, ns, job, status, suffix=f"{index}-{job['metadata']['uid'][:5]}")


def exited(code: int, at: str) -> dict[str, Any]:
    term = {"exitCode": code, "reason": "Error", "finishedAt": at, "startedAt": "2026-01-01T00:00:00Z"}
    return {"phase": "Failed", **container({"terminated": term})}


def fail_job(api: Api, ns: str, name: str, pod: str, code: int) -> None:
    message = (
        f"Container trainer for pod {ns}/{pod} failed with exit code {code} matching FailJob rule at index 1"
    )
    condition = {
        "type": "Failed",
        "status": "True",
        "reason": "PodFailurePolicy",
        "message": message,
        "lastTransitionTime": "2026-01-01T01:00:05Z",
    }
    set_job_status(api, ns, name, {"active": 0, "failed": 2, "conditions": [condition]})


def test_a_failed_worker_restarts_the_gang_once(api: Api, ns: str, operator: Operator) -> None:
    run = create_run(api, ns, "gang", workers=2)
    job = job_of_attempt(api, ns, "gang-train", 0)
    assert job["spec"]["completionMode"] == "Indexed" and job["spec"]["parallelism"] == 2
    assert job["spec"]["backoffLimit"] == 0
    service = wait_for("the Service", lambda: api.maybe_get(f"/api/v1/namespaces/{ns}/services/gang-workers"))
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert service["metadata"]["ownerReferences"][0]["uid"] == run["metadata"]["uid"]

    first = [worker(api, ns, job, i, RUNNING_POD) for i in (0, 1)]
    status = wait_phase(api, ns, "gang", "Running")
    assert condition(status, "Running")["message"] == "all 2 workers are running"

    api.merge(
        f"/api/v1/namespaces/{ns}/pods/{first[1]}/status", {"status": exited(137, "2026-01-01T01:00:01Z")}
    )
    api.merge(
        f"/api/v1/namespaces/{ns}/pods/{first[0]}/status", {"status": exited(5, "2026-01-01T01:00:03Z")}
    )
    fail_job(api, ns, "gang-train", first[1], 137)

    new = job_of_attempt(api, ns, "gang-train", 1)
    assert new["metadata"]["uid"] != job["metadata"]["uid"]
    assert new["spec"]["template"]["metadata"]["labels"][ATTEMPT] == "1"
    _, _, message = wait_event(api, ns, "gang", "Restarted")
    assert f"worker 1 (pod {first[1]}) exited 137 (killed)" in message
    assert "restarting all 2 workers from the last checkpoint (restart 1 of at most 3)" in message
    status = run_status(api, ns, "gang")
    assert (status["attempt"], status["restarts"], status["failures"]) == (1, 1, 1)
    assert status["phase"] != "Failed"
    wait_for(
        "the old pods gone",
        lambda: not [p for p in first if api.maybe_get(f"/api/v1/namespaces/{ns}/pods/{p}")],
    )

    time.sleep(2)  # the old Job's deletion and its pods' events have all been handled: still one restart
    assert [j["metadata"]["name"] for j in jobs(api, ns)] == ["gang-train"]
    assert job_of_attempt(api, ns, "gang-train", 1)["metadata"]["uid"] == new["metadata"]["uid"]
    assert run_status(api, ns, "gang")["restarts"] == 1
    assert len([e for e in events(api, ns, "gang") if e[1] == "Restarted"]) == 1

    second = [worker(api, ns, new, i, RUNNING_POD) for i in (0, 1)]
    wait_phase(api, ns, "gang", "Running")
    for pod in second:
        api.merge(f"/api/v1/namespaces/{ns}/pods/{pod}/status", {"status": {"phase": "Succeeded"}})
    done = {
        "type": "Complete",
        "status": "True",
        "reason": "CompletionsReached",
        "message": "Reached expected number of succeeded pods",
        "lastTransitionTime": "2026-01-01T02:00:00Z",
    }
    set_job_status(api, ns, "gang-train", {"succeeded": 2, "completedIndexes": "0,1", "conditions": [done]})
    status = wait_phase(api, ns, "gang", "Succeeded")
    assert status["restarts"] == 1 and status["attempt"] == 1


def test_nan_loss_on_one_worker_fails_the_run(api: Api, ns: str, operator: Operator) -> None:
    create_run(api, ns, "nan", workers=2)
    job = job_of_attempt(api, ns, "nan-train", 0)
    pods = [worker(api, ns, job, i, RUNNING_POD) for i in (0, 1)]
    api.merge(f"/api/v1/namespaces/{ns}/pods/{pods[0]}/status", {"status": exited(4, "2026-01-01T01:00:01Z")})
    fail_job(api, ns, "nan-train", pods[0], 4)
    status = wait_phase(api, ns, "nan", "Failed", "NaNLoss")
    assert f"worker 0 (pod {pods[0]})" in condition(status, "Failed")["message"]
    time.sleep(1)
    assert job_of_attempt(api, ns, "nan-train", 0)["metadata"]["uid"] == job["metadata"]["uid"], "no restart"


def test_an_operator_stopped_mid_restart_finishes_it_once(api: Api, ns: str, operator: Operator) -> None:
    """Stopped right after it wrote the restart (attempt 1) and before it deleted the Job of attempt 0: the
    next operator deletes that Job and creates attempt 1's, without counting the restart again."""
    create_run(api, ns, "half", workers=2)
    job = job_of_attempt(api, ns, "half-train", 0)
    pods = [worker(api, ns, job, i, RUNNING_POD) for i in (0, 1)]
    wait_phase(api, ns, "half", "Running")
    operator.stop()
    api.merge(f"{RUNS.format(ns=ns)}/half/status", {"status": {"attempt": 1, "restarts": 1, "failures": 1}})
    api.merge(
        f"/api/v1/namespaces/{ns}/pods/{pods[1]}/status", {"status": exited(137, "2026-01-01T01:00:01Z")}
    )
    fail_job(api, ns, "half-train", pods[1], 137)
    operator.start()
    new = job_of_attempt(api, ns, "half-train", 1)
    assert new["metadata"]["uid"] != job["metadata"]["uid"]
    time.sleep(2)
    status = run_status(api, ns, "half")
    assert (status["attempt"], status["restarts"], status["failures"]) == (1, 1, 1)
    assert "Traceback" not in operator.log()
