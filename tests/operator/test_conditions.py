"""Condition transitions, phase derivation, Job/pod -> reason mapping, stall detection and transition Events."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from trainop.conditions import (
    derive_phase,
    get_condition,
    job_to_conditions,
    phase_reason,
    set_condition,
    stall_update,
)
from trainop.runs import Run
from trainop.settings import Settings
from trainop.stall import due
from trainop.status import compose, observe

from trainer.api.spec import TrainingRunSpec

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
T1 = T0 + timedelta(minutes=5)


def cond(conditions: list[dict[str, Any]], type_: str) -> dict[str, Any]:
    found = get_condition(conditions, type_)
    assert found is not None, f"no {type_} condition in {conditions}"
    return dict(found)


# --- set_condition / derive_phase --------------------------------------------------------------------------------


def test_set_condition_adds_and_keeps_transition_time_unless_status_changes() -> None:
    conds = set_condition([], "Running", "False", "Unschedulable", "no GPU", T0)
    assert conds == [
        {
            "type": "Running",
            "status": "False",
            "reason": "Unschedulable",
            "message": "no GPU",
            "lastTransitionTime": "2026-01-02T03:04:05Z",
        }
    ]
    same_status = set_condition(conds, "Running", "False", "ImagePullBackOff", "bad image", T1)
    assert cond(same_status, "Running")["lastTransitionTime"] == "2026-01-02T03:04:05Z"
    assert cond(same_status, "Running")["reason"] == "ImagePullBackOff"
    changed = set_condition(same_status, "Running", "True", "PodRunning", "pod runs", T1)
    assert cond(changed, "Running")["lastTransitionTime"] == "2026-01-02T03:09:05Z"
    assert conds[0]["reason"] == "Unschedulable", "the input list must not be mutated"


def test_set_condition_keeps_other_types_and_validates_status() -> None:
    conds = set_condition([], "JobCreated", "True", "JobCreated", "ok", T0)
    conds = set_condition(conds, "Running", "True", "PodRunning", "ok", T1, observed_generation=3)
    assert [c["type"] for c in conds] == ["JobCreated", "Running"]
    assert cond(conds, "Running")["observedGeneration"] == 3
    with pytest.raises(ValueError):
        set_condition(conds, "Running", "yes", "X", "", T0)


@pytest.mark.parametrize(
    ("true_types", "phase"),
    [
        ([], "Pending"),
        (["JobCreated"], "Pending"),
        (["JobCreated", "Running"], "Running"),
        (["JobCreated", "Running", "Stalled"], "Running"),
        (["JobCreated", "Suspended"], "Suspended"),
        (["JobCreated", "Succeeded"], "Succeeded"),
        (["JobCreated", "Failed"], "Failed"),
        (["JobCreated", "Running", "Failed"], "Failed"),
        (["Succeeded", "Failed"], "Failed"),
    ],
)
def test_derive_phase(true_types: list[str], phase: str) -> None:
    conds: list[dict[str, Any]] = []
    for t in ["JobCreated", "Running", "Succeeded", "Failed", "Stalled", "Suspended"]:
        conds = set_condition(conds, t, "True" if t in true_types else "False", "R", "m", T0)
    assert derive_phase(conds) == phase


def test_phase_reason_while_pending_is_the_running_conditions_reason() -> None:
    conds = set_condition([], "JobCreated", "True", "JobCreated", "Job x created", T0)
    assert phase_reason(conds) == ("JobCreated", "Job x created")
    conds = set_condition(
        conds, "Running", "False", "Unschedulable", "0/3 nodes: Insufficient nvidia.com/gpu", T0
    )
    assert phase_reason(conds) == ("Unschedulable", "0/3 nodes: Insufficient nvidia.com/gpu")
    assert phase_reason([]) == ("Created", "waiting for the operator to create the Job")


# --- Job and pods -> conditions -------------------------------------------------------------------------------


def job(
    *conds: tuple[str, str, str], suspend: bool = False, failed: int = 0, **status: Any
) -> dict[str, Any]:
    return {
        "metadata": {"name": "sol-tft-train"},
        "spec": {"suspend": suspend},
        "status": {
            "failed": failed,
            "conditions": [
                {
                    "type": t,
                    "status": "True",
                    "reason": r,
                    "message": m,
                    "lastTransitionTime": "2026-01-02T04:00:00Z",
                }
                for t, r, m in conds
            ],
            **status,
        },
    }


def pod(
    phase: str,
    *,
    waiting: str | None = None,
    terminated: dict[str, Any] | None = None,
    scheduled: tuple[str, str] | None = None,
    name: str = "sol-tft-train-abcde",
    restarts: int = 0,
) -> dict[str, Any]:
    state: dict[str, Any] = {}
    if waiting:
        state = {"waiting": {"reason": waiting, "message": f"{waiting} message"}}
    if terminated:
        state = {"terminated": terminated}
    status: dict[str, Any] = {
        "phase": phase,
        "containerStatuses": [{"name": "trainer", "state": state, "restartCount": restarts}],
    }
    if scheduled:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": scheduled[0], "message": scheduled[1]}
        ]
    return {
        "metadata": {"name": name, "creationTimestamp": "2026-01-02T03:00:00Z"},
        "spec": {"nodeName": "gpu-1"} if phase == "Running" else {},
        "status": status,
    }


def updates_of(
    job_: dict[str, Any] | None, pods: list[dict[str, Any]], **kw: Any
) -> dict[str, tuple[str, str]]:
    return {t: (s, r) for t, s, r, _ in job_to_conditions(job_, pods, **kw).updates}


def test_no_job_no_updates() -> None:
    assert job_to_conditions(None, []).updates == []


def test_running_pod() -> None:
    u = updates_of(job(active=1, startTime="2026-01-02T03:00:00Z"), [pod("Running")])
    assert u["Running"] == ("True", "PodRunning")
    assert u["JobCreated"] == ("True", "JobCreated")
    assert u["Failed"][0] == "False" and u["Succeeded"][0] == "False" and u["Suspended"][0] == "False"
    obs = job_to_conditions(job(active=1, startTime="2026-01-02T03:00:00Z"), [pod("Running")])
    assert obs.start_time == "2026-01-02T03:00:00Z"


@pytest.mark.parametrize("reason", ["ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError"])
def test_waiting_reasons(reason: str) -> None:
    assert updates_of(job(active=1), [pod("Pending", waiting=reason)])["Running"] == ("False", reason)


def test_pod_level_waiting_reason() -> None:
    p = pod("Pending")
    p["status"].update(reason="CreateContainerConfigError", message='secret "s3-credentials" not found')
    assert updates_of(job(active=1), [p])["Running"] == ("False", "CreateContainerConfigError")


def test_unschedulable() -> None:
    p = pod("Pending", scheduled=("Unschedulable", "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."))
    obs = job_to_conditions(job(active=1), [p])
    running = next(x for x in obs.updates if x[0] == "Running")
    assert running[1:3] == ("False", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in running[3]


def test_starting_and_waiting_for_pod() -> None:
    assert updates_of(job(), [pod("Pending", waiting="ContainerCreating")])["Running"] == (
        "False",
        "Starting",
    )
    assert updates_of(job(), [])["Running"] == ("False", "WaitingForPod")
    failed = pod("Failed", terminated={"exitCode": 1, "reason": "Error"})
    assert updates_of(job(failed=1), [failed])["Running"] == ("False", "Restarting")


@pytest.mark.parametrize(
    ("pods", "expected"),
    [
        # The trainer exited 0 and the Job is not Complete yet: still Running, never back to Pending.
        ([pod("Succeeded", terminated={"exitCode": 0})], ("True", "TrainerFinished")),
        # Exit codes the podFailurePolicy fails the Job on: the reason at once, never "Restarting".
        ([pod("Failed", terminated={"exitCode": 2, "reason": "Error"})], ("False", "InvalidConfig")),
        ([pod("Failed", terminated={"exitCode": 4, "reason": "Error"})], ("False", "NaNLoss")),
        # A retried failure (exit 1, 3) waits for the next pod; a live pod decides by itself.
        ([pod("Failed", terminated={"exitCode": 3, "reason": "Error"})], ("False", "Restarting")),
        (
            [pod("Succeeded", terminated={"exitCode": 0}), pod("Pending", waiting="ContainerCreating")],
            ("False", "Starting"),
        ),
    ],
)
def test_between_exit_and_job_verdict(pods: list[dict[str, Any]], expected: tuple[str, str]) -> None:
    assert updates_of(job(failed=1), pods)["Running"] == expected


def test_succeeded() -> None:
    obs = job_to_conditions(
        job(("Complete", "CompletionsReached", "done"), completionTime="2026-01-02T05:00:00Z"),
        [pod("Succeeded", terminated={"exitCode": 0})],
    )
    u = {t: (s, r) for t, s, r, _ in obs.updates}
    assert u["Succeeded"] == ("True", "Completed") and u["Running"] == ("False", "Completed")
    assert obs.completion_time == "2026-01-02T05:00:00Z"


@pytest.mark.parametrize(
    ("job_cond", "pods", "reason"),
    [
        (
            ("Failed", "DeadlineExceeded", "Job was active longer than specified deadline"),
            [],
            "DeadlineExceeded",
        ),
        (
            ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            [pod("Failed", terminated={"exitCode": 1, "reason": "Error"})],
            "BackoffLimitExceeded",
        ),
        (
            ("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit"),
            [pod("Failed", terminated={"exitCode": 137, "reason": "OOMKilled"})],
            "OOMKilled",
        ),
        (
            (
                "Failed",
                "PodFailurePolicy",
                "Container trainer for pod ml/sol-tft-train-x failed with exit code 4 matching FailJob rule at index 1",
            ),
            [],
            "NaNLoss",
        ),
        (
            (
                "Failed",
                "PodFailurePolicy",
                "Container trainer for pod ml/sol-tft-train-x failed with exit code 2 matching FailJob rule at index 1",
            ),
            [],
            "InvalidConfig",
        ),
        (
            ("FailureTarget", "PodFailurePolicy", "no code in this message"),
            [pod("Failed", terminated={"exitCode": 4, "reason": "Error"})],
            "NaNLoss",
        ),
        (
            ("Failed", "BackoffLimitExceeded", "limit"),
            [pod("Failed", terminated={"exitCode": 3, "reason": "Error"})],
            "StorageError",
        ),
    ],
)
def test_failure_reasons(job_cond: tuple[str, str, str], pods: list[dict[str, Any]], reason: str) -> None:
    u = updates_of(job(job_cond, failed=len(pods)), pods)
    assert u["Failed"] == ("True", reason)
    assert u["Running"] == ("False", reason)


def test_failure_reason_uses_the_latest_attempt() -> None:
    old = pod(
        "Failed",
        name="a",
        terminated={"exitCode": 137, "reason": "OOMKilled", "finishedAt": "2026-01-02T03:10:00Z"},
    )
    new = pod(
        "Failed",
        name="b",
        terminated={"exitCode": 1, "reason": "Error", "finishedAt": "2026-01-02T03:20:00Z"},
    )
    assert updates_of(job(("Failed", "BackoffLimitExceeded", "m"), failed=2), [new, old])["Failed"] == (
        "True",
        "BackoffLimitExceeded",
    )


def test_suspended_by_user_and_by_queue() -> None:
    assert updates_of(job(suspend=True), [], spec_suspend=True)["Suspended"] == ("True", "SuspendedByUser")
    by_kueue = updates_of(job(suspend=True), [], spec_suspend=False)
    assert by_kueue["Suspended"] == ("False", "Queued") and by_kueue["Running"] == ("False", "Queued")


def test_restarts_count_job_failures_ignored_pods_and_container_restarts() -> None:
    assert job_to_conditions(job(failed=2), []).restarts == 2
    preempted = [pod("Failed", name=f"p{i}", terminated={"exitCode": 143}) for i in range(3)]
    assert job_to_conditions(job(failed=0), preempted).restarts == 3
    assert job_to_conditions(job(failed=1), [pod("Running", restarts=2)]).restarts == 3


# --- compose: patches and Events -------------------------------------------------------------------------------


def run_with(conditions: list[dict[str, Any]] | None = None, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "sol-tft", "namespace": "ml", "generation": 2},
        "spec": {"symbol": "SOL"},
        "status": {"conditions": conditions or [], **status},
    }


def test_observe_writes_once_and_events_once() -> None:
    j = job(active=1)
    p = pod("Pending", scheduled=("Unschedulable", "no GPU"))
    first = observe(run_with(), j, [p], T0, spec_suspend=False)
    assert first.status["phase"] == "Pending" and first.status["reason"] == "Unschedulable"
    assert first.status["jobName"] == "sol-tft-train" and first.status["observedGeneration"] == 2
    assert [(e.type, e.reason) for e in first.events] == [
        ("Normal", "JobCreated"),
        ("Warning", "Unschedulable"),
    ]
    again = observe(run_with(**first.status), j, [p], T1, spec_suspend=False)
    assert again.status == {} and again.events == [], "a re-delivered event must change and announce nothing"
    running = observe(run_with(**first.status), j, [pod("Running")], T1, spec_suspend=False)
    assert running.status["phase"] == "Running" and running.old_phase == "Pending"
    assert [(e.type, e.reason) for e in running.events] == [("Normal", "Running")]


def test_observe_failure_event_and_transition() -> None:
    start = observe(run_with(), job(active=1), [pod("Running")], T0, spec_suspend=False)
    failed = observe(
        run_with(**start.status),
        job(("Failed", "PodFailurePolicy", "exit code 4 matching"), failed=1),
        [],
        T1,
        spec_suspend=False,
    )
    assert failed.phase == "Failed" and failed.reason == "NaNLoss" and failed.old_phase == "Running"
    assert failed.status["reason"] == "NaNLoss"
    assert ("Warning", "NaNLoss") in [(e.type, e.reason) for e in failed.events]
    assert ("Warning", "Restarted") in [(e.type, e.reason) for e in failed.events]
    assert cond(failed.status["conditions"], "Running")["lastTransitionTime"] == "2026-01-02T03:09:05Z"
    assert cond(failed.status["conditions"], "JobCreated")["lastTransitionTime"] == "2026-01-02T03:04:05Z"


def test_observe_without_job_keeps_status() -> None:
    """A Job deleted by its TTL must not erase a finished run's conditions."""
    done = run_with(phase="Succeeded")
    assert observe(done, None, [], T1, spec_suspend=False).status == {}


def test_compose_invalid_spec() -> None:
    change = compose(run_with(), [("Failed", "True", "InvalidSpec", "spec.training.epochs: too small")], T0)
    assert change.status["phase"] == "Failed" and change.status["reason"] == "InvalidSpec"
    assert [(e.type, e.reason) for e in change.events] == [("Warning", "InvalidSpec")]


# --- stall detection -------------------------------------------------------------------------------------------


def running_status(progress_at: datetime | None, stalled: bool | None = None) -> dict[str, Any]:
    conds = set_condition([], "Running", "True", "PodRunning", "runs", T0)
    if stalled is not None:
        conds = set_condition(conds, "Stalled", "True" if stalled else "False", "X", "m", T0)
    status: dict[str, Any] = {"conditions": conds, "phase": "Running"}
    if progress_at:
        status["progress"] = {"lastProgressTime": progress_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    return status


def test_stall_marked_after_timeout_and_cleared_on_progress() -> None:
    timeout = 15 * 60
    assert stall_update(running_status(T0), timeout, T0 + timedelta(minutes=14)) is None
    update = stall_update(running_status(T0), timeout, T0 + timedelta(minutes=16))
    assert update is not None and update[:3] == ("Stalled", "True", "NoProgress")
    assert stall_update(running_status(T0, stalled=True), timeout, T0 + timedelta(minutes=20)) is None
    resumed = stall_update(
        running_status(T0 + timedelta(minutes=19), stalled=True), timeout, T0 + timedelta(minutes=20)
    )
    assert resumed is not None and resumed[:3] == ("Stalled", "False", "ProgressResumed")


def test_stall_counts_from_running_when_no_progress_yet() -> None:
    assert stall_update(running_status(None), 60, T0 + timedelta(seconds=30)) is None
    update = stall_update(running_status(None), 60, T0 + timedelta(seconds=61))
    assert update is not None and update[1] == "True"


def test_stall_only_for_running_runs() -> None:
    pending = {"conditions": set_condition([], "Running", "False", "Unschedulable", "m", T0)}
    assert stall_update(pending, 1, T1) is None
    finished = {
        "conditions": set_condition(
            set_condition([], "Succeeded", "True", "Completed", "m", T0),
            "Stalled",
            "True",
            "NoProgress",
            "m",
            T0,
        )
    }
    update = stall_update(finished, 1, T1)
    assert update is not None and update[:3] == ("Stalled", "False", "NotRunning")


def test_stall_events() -> None:
    status = running_status(T0)
    change = compose(run_with(**status), [("Stalled", "True", "NoProgress", "no progress")], T1)
    assert [(e.type, e.reason) for e in change.events] == [("Warning", "Stalled")]
    assert "phase" not in change.status, "Stalled is a condition of a Running run, not a phase"
    resumed = compose(
        run_with(**{**status, **change.status}), [("Stalled", "False", "ProgressResumed", "progress")], T1
    )
    assert [(e.type, e.reason) for e in resumed.events] == [("Normal", "ProgressResumed")]


def test_stall_sweep_picks_only_runs_whose_condition_changes() -> None:
    spec = TrainingRunSpec.model_validate({"symbol": "SOL", "stallTimeout": "10m"})
    quiet = Run("ml", "quiet", "u1", spec, status=running_status(T0 + timedelta(minutes=15)))
    stalled = Run("ml", "late", "u2", spec, status=running_status(T0))
    default = Run(
        "ml", "default", "u3", TrainingRunSpec.model_validate({"symbol": "SOL"}), status=stalled.status
    )
    invalid = Run("ml", "bad", "u4", None, status=stalled.status)
    settings = Settings(stall_timeout="40m")
    picked = due([quiet, stalled, default, invalid], settings, T0 + timedelta(minutes=20))
    assert [(r.name, t) for r, t in picked] == [("late", 600.0)]


def test_stall_sweep_uses_the_resolved_timeout() -> None:
    """The profile's stallTimeout, else the defaults' (TRAINOP_STALL_TIMEOUT is one of them); an unknown
    profile is skipped (that run is Failed/InvalidSpec), never a reason to stop the sweep."""
    settings = Settings(
        trainer_defaults={"stallTimeout": "40m"}, trainer_profiles={"slow": {"stallTimeout": "2h"}}
    )
    status = running_status(T0)

    def run(name: str, **spec: str) -> Run:
        return Run("ml", name, name, TrainingRunSpec.model_validate({"symbol": "SOL", **spec}), status=status)

    runs = [run("default"), run("slow", profile="slow"), run("own", profile="slow", stallTimeout="10m")]
    picked = due([*runs, run("unknown", profile="nope")], settings, T0 + timedelta(minutes=45))
    assert [(r.name, t) for r, t in picked] == [("default", 2400.0), ("own", 600.0)]
