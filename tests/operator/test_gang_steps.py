"""A gang restart walked step by step through ``trainop.gang.decide`` (the executor's steps simulated on a world of
status, Job and pods): an operator killed after any step, or a step delivered twice, neither loses nor repeats an
attempt."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest
from trainop.gang import ATTEMPT_LABEL, Decision, decide
from trainop.status import Event, apply_decision

from tests.operator.test_gang import FAILED_JOB, T1, T3, T, job, pod, run_body, status

# --- a gang restart, step by step --------------------------------------------------------------------------------


@dataclass
class World:
    """What the API holds for one run: its status, its Job, its pods; and the Events posted so far."""

    status: dict[str, Any]
    job: dict[str, Any] | None
    pods: list[dict[str, Any]]
    events: list[Event] = field(default_factory=list)

    def decide(self) -> Decision:
        return decide(self.status, backoff_limit=3, workers=2, job=self.job, pods=self.pods)

    def apply(self, decision: Decision) -> None:
        """The executor's step (``children._step``), and what the cluster then does by itself."""
        if decision.action in ("Fail", "Restart"):
            change = apply_decision(run_body(self.status), decision, T)
            self.status.update(copy.deepcopy(change.status))
            self.events += change.events
        elif decision.action == "DeleteJob":
            self.job = None  # Background propagation: the Job goes at once, its pods terminate
            for p in self.pods:
                if p["metadata"]["name"] in decision.pods:
                    p["metadata"]["deletionTimestamp"] = T3
        elif decision.action == "Wait":  # the kubelet finishes terminating what is being deleted
            for p in self.pods:
                if p["metadata"]["name"] in decision.pods:
                    p["metadata"]["deletionTimestamp"] = T3
            self.pods = [p for p in self.pods if "deletionTimestamp" not in p["metadata"]]
        elif decision.action == "CreateJob":
            self.job = job(decision.gang.attempt)
            attempt = decision.gang.attempt
            self.pods.extend([pod(0, attempt), pod(1, attempt)])

    def drive(self, steps: int = 10) -> list[str]:
        taken = []
        for _ in range(steps):
            decision = self.decide()
            if decision.action == "Nothing":
                return taken
            taken.append(decision.action)
            self.apply(decision)
        raise AssertionError(f"no end after {steps} steps: {taken}")


def failed_world() -> World:
    """Worker 1 was OOM-killed, the Job of attempt 0 failed, and the Job controller is terminating worker 0."""
    return World(status(), FAILED_JOB, [pod(0), pod(1, code=137, at=T1, reason="OOMKilled")])


def check_restarted_once(world: World) -> None:
    assert (world.status["attempt"], world.status["restarts"], world.status["failures"]) == (1, 1, 1)
    assert world.job is not None and world.job["metadata"]["labels"][ATTEMPT_LABEL] == "1"
    live = sorted(p["metadata"]["name"] for p in world.pods if p["status"]["phase"] == "Running")
    assert live == ["sol-tft-train-0-fghij", "sol-tft-train-1-fghij"], "the new gang only"
    restarted = [e for e in world.events if e.reason == "Restarted"]
    assert (
        len(restarted) == 1
        and "worker 1 (pod sol-tft-train-1-abcde) exited 137 (OOMKilled)" in restarted[0].message
    )


def test_a_gang_restart_takes_four_steps() -> None:
    world = failed_world()
    assert world.drive() == ["Restart", "DeleteJob", "Wait", "CreateJob"]
    check_restarted_once(world)


def intermediate_states() -> list[tuple[str, World]]:
    """Every state a restart passes through, including the halves of the steps that are two API calls."""
    states = []
    world = failed_world()
    for step in range(5):
        states.append((f"after {step} steps", copy.deepcopy(world)))
        decision = world.decide()
        if decision.action == "DeleteJob":  # killed between deleting the Job and deleting its pods
            half = copy.deepcopy(world)
            half.job = None
            states.append(("the Job deleted, its pods not yet", half))
        if decision.action == "Nothing":
            break
        world.apply(decision)
    return states


@pytest.mark.parametrize(("name", "state"), intermediate_states(), ids=[s[0] for s in intermediate_states()])
def test_an_operator_killed_at_any_point_neither_loses_nor_repeats_the_restart(
    name: str, state: World
) -> None:
    state.drive()  # a new operator process, starting from what the API holds
    check_restarted_once(state)


def test_a_step_delivered_twice_is_taken_once() -> None:
    """Two handlers decided on the same snapshot: the second write re-decides on the status the first one left
    (``children._step``) and finds another step to take, so it writes nothing."""
    world = failed_world()
    first = world.decide()
    world.apply(first)
    again = decide(world.status, backoff_limit=3, workers=2, job=FAILED_JOB, pods=failed_world().pods)
    assert first.action == "Restart" and again != first and again.action == "DeleteJob"
    world.drive()
    check_restarted_once(world)


def test_a_second_failure_after_a_restart_is_counted_again() -> None:
    world = failed_world()
    world.drive()
    assert world.job is not None
    world.job = job(1, failed=("PodFailurePolicy", ""))
    world.pods = [pod(0, 1, code=137, at=T1), pod(1, 1)]
    assert world.drive() == ["Restart", "DeleteJob", "Wait", "CreateJob"]
    assert (world.status["attempt"], world.status["restarts"], world.status["failures"]) == (2, 2, 2)
    assert "worker 0 (pod sol-tft-train-0-fghij) exited 137 (killed)" in world.events[-1].message
