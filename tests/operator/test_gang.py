"""The gang decision of multi-worker runs (``trainop.gang``), table-driven: which step comes next for each state
of a run, its Job and its pods; the status a decision writes; what a running gang looks like.
``test_gang_steps`` walks whole restarts through these decisions."""

from __future__ import annotations

import copy
from datetime import datetime, timezone
from typing import Any

import pytest
from trainop.conditions import job_to_conditions
from trainop.gang import ATTEMPT_LABEL, INDEX_KEY, decide
from trainop.status import Event, apply_decision, observe

T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T1, T2, T3 = "2026-01-02T03:00:01Z", "2026-01-02T03:00:02Z", "2026-01-02T03:00:03Z"
SUFFIX = ("abcde", "fghij", "klmno", "pqrst")


def job(
    attempt: int = 0, *, failed: tuple[str, str] | None = None, complete: bool = False, deleting: bool = False
) -> dict[str, Any]:
    conditions = []
    if failed:
        conditions.append(
            {
                "type": "Failed",
                "status": "True",
                "reason": failed[0],
                "message": failed[1],
                "lastTransitionTime": T3,
            }
        )
    if complete:
        conditions.append(
            {
                "type": "Complete",
                "status": "True",
                "reason": "CompletionsReached",
                "message": "",
                "lastTransitionTime": T3,
            }
        )
    meta: dict[str, Any] = {
        "name": "sol-tft-train",
        "uid": f"job-{attempt}",
        "labels": {ATTEMPT_LABEL: str(attempt)},
    }
    if deleting:
        meta["deletionTimestamp"] = T3
    return {"metadata": meta, "spec": {"parallelism": 2}, "status": {"conditions": conditions}}


def pod(
    index: int,
    attempt: int = 0,
    *,
    code: int | None = None,
    at: str = T1,
    reason: str = "Error",
    disrupted: str | None = None,
    phase: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    name = f"sol-tft-train-{index}-{SUFFIX[attempt]}"
    labels = {ATTEMPT_LABEL: str(attempt), INDEX_KEY: str(index)}
    meta: dict[str, Any] = {"name": name, "labels": labels, "ownerReferences": [{"uid": f"job-{attempt}"}]}
    if deleting:
        meta["deletionTimestamp"] = T3
    status: dict[str, Any] = {
        "phase": phase or ("Running" if code is None else "Failed" if code else "Succeeded")
    }
    if code is not None:
        term = {"exitCode": code, "reason": reason, "finishedAt": at}
        status["containerStatuses"] = [{"name": "trainer", "state": {"terminated": term}}]
    if disrupted:
        status["phase"] = phase or "Failed"
        status["conditions"] = [
            {
                "type": "DisruptionTarget",
                "status": "True",
                "reason": disrupted,
                "message": "by the scheduler",
                "lastTransitionTime": at,
            }
        ]
    return {"metadata": meta, "status": status}


def status(
    attempt: int = 0, restarts: int = 0, failures: int = 0, finished: str | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"attempt": attempt, "restarts": restarts, "failures": failures}
    if finished:
        out["conditions"] = [
            {"type": finished, "status": "True", "reason": "X", "message": "", "lastTransitionTime": T1}
        ]
    return out


FAILED_JOB = job(
    failed=(
        "PodFailurePolicy",
        "Container trainer for pod ml/sol-tft-train-1-abcde failed with exit code 137",
    )
)

# (case, status, Job, pods, action, (attempt, restarts, failures) after, reason, phrases of the message)
CASES = [
    ("new-run-creates-attempt-0", status(), None, [], "CreateJob", (0, 0, 0), "", ["attempt 0"]),
    ("running-gang-is-left-alone", status(), job(), [pod(0), pod(1)], "Nothing", (0, 0, 0), "", []),
    ("completed-gang-is-observed", status(), job(complete=True), [pod(0, code=0), pod(1, code=0)], "Nothing", (0, 0, 0), "", []),
    ("finished-run-is-left-alone", status(finished="Failed"), FAILED_JOB, [pod(1, code=137)], "Nothing", (0, 0, 0), "", ["finished"]),
    (
        "killed-worker-is-the-culprit-not-its-peer",
        status(), FAILED_JOB, [pod(0, code=5, at=T2), pod(1, code=137, at=T1)],
        "Restart", (1, 1, 1), "WorkerFailed",
        ["worker 1 (pod sol-tft-train-1-abcde) exited 137 (killed); restarting all 2 workers from the last checkpoint (restart 1 of at most 3)"],
    ),
    (
        "sigterm-from-the-job-controller-after-a-crash-counts",
        status(), FAILED_JOB, [pod(0, code=143, at=T2), pod(1, code=1, at=T1)],
        "Restart", (1, 1, 1), "WorkerFailed", ["worker 1", "exited 1 (crashed; see its log)"],
    ),
    (
        "same-second-crash-beats-sigterm",
        status(), FAILED_JOB, [pod(0, code=143, at=T1), pod(1, code=137, at=T1)],
        "Restart", (1, 1, 1), "WorkerFailed", ["worker 1"],
    ),
    (
        "preempted-first-is-not-counted",
        status(restarts=2, failures=3), FAILED_JOB, [pod(0, code=143, at=T2), pod(1, code=5, at=T1)],
        "Restart", (1, 3, 3), "Preempted", ["worker 0", "exited 143", "do not count against backoffLimit"],
    ),
    (
        "disruption-target-is-not-counted",
        status(failures=3), FAILED_JOB, [pod(0, code=5, at=T2), pod(1, disrupted="PreemptionByScheduler", at=T1)],
        "Restart", (1, 1, 3), "Preempted", ["worker 1 (pod sol-tft-train-1-abcde) was disrupted (PreemptionByScheduler: by the scheduler)"],
    ),
    (
        "nan-loss-fails-at-once",
        status(failures=1), FAILED_JOB, [pod(0, code=5, at=T2), pod(1, code=4, at=T1)],
        "Fail", (0, 0, 1), "NaNLoss", ["worker 1 (pod sol-tft-train-1-abcde): the loss became NaN/inf"],
    ),
    (
        "invalid-config-fails-at-once",
        status(), FAILED_JOB, [pod(0, code=2, at=T1), pod(1, code=143, at=T2)],
        "Fail", (0, 0, 0), "InvalidConfig", ["worker 0 (pod sol-tft-train-0-abcde)", "refused the spec"],
    ),
    (
        "pods-gone-the-jobs-message-names-the-pod",
        status(), job(failed=("PodFailurePolicy", "Container trainer for pod ml/sol-tft-train-1-abcde failed with exit code 4 matching FailJob rule at index 1")), [],
        "Fail", (0, 0, 0), "NaNLoss", ["worker 1 (pod sol-tft-train-1-abcde)"],
    ),
    (
        "backoff-limit-reached-names-the-worker",
        status(attempt=3, restarts=4, failures=3), job(3, failed=("PodFailurePolicy", "")), [pod(0, 3, code=137, reason="OOMKilled")],
        "Fail", (3, 4, 3), "BackoffLimitExceeded", ["worker 0 (pod sol-tft-train-0-pqrst) exited 137 (OOMKilled)", "backoffLimit 3 reached"],
    ),
    (
        "oom-killed-worker-restarts-with-its-reason",
        status(), FAILED_JOB, [pod(0, code=137, reason="OOMKilled")],
        "Restart", (1, 1, 1), "OOMKilled", ["exited 137 (OOMKilled)"],
    ),
    (
        "storage-error-restarts-with-its-reason",
        status(), FAILED_JOB, [pod(1, code=3)],
        "Restart", (1, 1, 1), "StorageError", ["exited 3 (checkpoint storage unusable)"],
    ),
    (
        "all-lost-their-peers-still-names-the-first",
        status(), FAILED_JOB, [pod(0, code=5, at=T2), pod(1, code=5, at=T1)],
        "Restart", (1, 1, 1), "WorkerFailed", ["worker 1", "exited 5 (lost its peers)"],
    ),
    (
        "no-failed-pod-names-the-job",
        status(), job(failed=("BackoffLimitExceeded", "Job has reached the specified backoff limit")), [pod(0), pod(1)],
        "Restart", (1, 1, 1), "WorkerFailed", ["Job sol-tft-train failed (BackoffLimitExceeded"],
    ),
    (
        "deadline-fails-the-run",
        status(), job(failed=("DeadlineExceeded", "Job was active longer than specified deadline")), [pod(0, code=143)],
        "Fail", (0, 0, 0), "DeadlineExceeded", ["activeDeadlineSeconds reached in attempt 0"],
    ),
    (
        "pods-of-an-older-attempt-are-not-judged",
        status(attempt=1, restarts=1, failures=1), job(1, failed=("PodFailurePolicy", "")), [pod(0, 0, code=4), pod(1, 1, code=137)],
        "Restart", (2, 2, 2), "WorkerFailed", ["worker 1 (pod sol-tft-train-1-fghij) exited 137", "restart 2 of at most 3"],
    ),
    (
        "stale-job-is-deleted-with-its-pods",
        status(attempt=1, restarts=1, failures=1), FAILED_JOB, [pod(0, code=5), pod(1, code=137, deleting=True)],
        "DeleteJob", (1, 1, 1), "", ["attempt 1 replaces it"],
    ),
    ("job-being-deleted-is-waited-for", status(attempt=1), job(deleting=True), [], "Wait", (1, 0, 0), "", ["being deleted"]),
    (
        "failed-job-deleted-by-its-ttl-is-judged-first",
        status(), job(failed=("PodFailurePolicy", "Container trainer for pod ml/sol-tft-train-0-abcde failed with exit code 1"), deleting=True), [],
        "Restart", (1, 1, 1), "WorkerFailed", ["worker 0 (pod sol-tft-train-0-abcde) exited 1"],
    ),
    ("completed-job-deleted-by-its-ttl-is-observed", status(), job(complete=True, deleting=True), [], "Nothing", (0, 0, 0), "", ["completed"]),
    (
        "live-pods-of-the-last-attempt-are-waited-for",
        status(attempt=1), None, [pod(0), pod(1, deleting=True), pod(2, code=137)],
        "Wait", (1, 0, 0), "", ["sol-tft-train-0-abcde, sol-tft-train-1-abcde"],
    ),
    (
        "finished-pods-do-not-block-the-next-attempt",
        status(attempt=1, restarts=1, failures=1), None, [pod(0, code=5), pod(1, code=137)],
        "CreateJob", (1, 1, 1), "", ["attempt 1"],
    ),
    (
        "a-job-without-an-attempt-label-is-attempt-0",
        status(), {**FAILED_JOB, "metadata": {"name": "sol-tft-train", "uid": "job-0"}}, [pod(1, code=137)],
        "Restart", (1, 1, 1), "WorkerFailed", ["worker 1"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("run_status", "the_job", "pods", "action", "counters", "reason", "phrases"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(
    run_status: dict[str, Any],
    the_job: dict[str, Any] | None,
    pods: list[dict[str, Any]],
    action: str,
    counters: tuple[int, int, int],
    reason: str,
    phrases: list[str],
) -> None:
    decision = decide(run_status, backoff_limit=3, workers=2, job=the_job, pods=pods)
    assert decision.action == action, decision
    assert (decision.gang.attempt, decision.gang.restarts, decision.gang.failures) == counters
    assert decision.reason == reason
    for phrase in phrases:
        assert phrase in decision.message, decision.message


def test_what_is_deleted_and_what_is_waited_for() -> None:
    stale = decide(
        status(attempt=1),
        backoff_limit=3,
        workers=2,
        job=FAILED_JOB,
        pods=[pod(0), pod(1, deleting=True), pod(0, 1)],
    )
    assert stale.job_uid == "job-0" and stale.pods == ("sol-tft-train-0-abcde",), (
        "only its own, not yet deleting"
    )
    waiting = decide(
        status(attempt=1), backoff_limit=3, workers=2, job=None, pods=[pod(0), pod(1, deleting=True)]
    )
    assert waiting.pods == ("sol-tft-train-0-abcde",)


def test_backoff_limit_zero_fails_at_the_first_counted_failure_but_not_at_a_preemption() -> None:
    crash = decide(status(), backoff_limit=0, workers=2, job=FAILED_JOB, pods=[pod(1, code=137)])
    assert crash.action == "Fail" and crash.reason == "BackoffLimitExceeded" and "worker 1" in crash.message
    preempted = decide(status(), backoff_limit=0, workers=2, job=FAILED_JOB, pods=[pod(1, code=143)])
    assert preempted.action == "Restart" and preempted.gang.failures == 0


# --- the status a decision writes ------------------------------------------------------------------------------


def run_body(run_status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "sol-tft", "generation": 1}, "status": copy.deepcopy(run_status)}


def test_a_restart_writes_the_counters_running_false_and_one_restarted_event() -> None:
    decision = decide(status(), backoff_limit=3, workers=2, job=FAILED_JOB, pods=[pod(1, code=137)])
    change = apply_decision(run_body(status()), decision, T)
    assert {k: change.status[k] for k in ("attempt", "restarts", "failures")} == {
        "attempt": 1,
        "restarts": 1,
        "failures": 1,
    }
    running = next(c for c in change.status["conditions"] if c["type"] == "Running")
    assert running["status"] == "False" and running["reason"] == "WorkerFailed"
    assert [e for e in change.events if e.reason == "Restarted"] == [
        Event("Warning", "Restarted", decision.message)
    ]


def test_a_failure_ends_the_run() -> None:
    decision = decide(status(), backoff_limit=3, workers=2, job=FAILED_JOB, pods=[pod(1, code=4)])
    change = apply_decision(run_body(status()), decision, T)
    assert change.status["phase"] == "Failed" and change.status["reason"] == "NaNLoss"
    assert change.status["completionTime"] == T3
    assert ("Warning", "NaNLoss") in [(e.type, e.reason) for e in change.events]
    assert not [e for e in change.events if e.reason == "Restarted"]


# --- what a running gang looks like ------------------------------------------------------------------------------

UNSCHEDULABLE = {
    "phase": "Pending",
    "conditions": [
        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}
    ],
}
RUNNING_GANG = [
    ("all-running", ["Running", "Running"], ("True", "PodsRunning", "all 2 workers are running")),
    ("one-starting", ["Running", "Pending"], ("False", "Starting", "1 of 2 workers are running; the others are starting")),
    ("one-unschedulable", ["Running", UNSCHEDULABLE], ("False", "Unschedulable", "0/3 nodes")),
    ("none-yet", ["Pending", "Pending"], ("False", "Starting", "the trainer pod is starting")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("phases", "running"), [c[1:] for c in RUNNING_GANG], ids=[c[0] for c in RUNNING_GANG]
)
def test_a_gang_runs_when_all_its_workers_do(phases: list[Any], running: tuple[str, str, str]) -> None:
    pods = []
    for i, phase in enumerate(phases):
        p = pod(i)
        p["status"] = phase if isinstance(phase, dict) else {"phase": phase}
        pods.append(p)
    obs = job_to_conditions(job(), pods)
    assert next(u[1:] for u in obs.updates if u[0] == "Running") == running


def test_observing_a_gang_keeps_its_restarts_and_first_start() -> None:
    later = job(1)
    later["status"]["startTime"] = T3
    body = run_body({**status(attempt=1, restarts=1, failures=1), "startTime": T1})
    change = observe(body, later, [pod(0, 1), pod(1, 1)], T, spec_suspend=False, gang=True)
    assert "restarts" not in change.status and "startTime" not in change.status
    assert not [e for e in change.events if e.reason == "Restarted"]
    single = observe(body, later, [pod(0, 1), pod(1, 1)], T, spec_suspend=False)
    assert single.status["restarts"] == 0 and single.status["startTime"] == T3, "what a single Job reports"
