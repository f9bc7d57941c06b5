"""A walk-forward run's status (``trainop.folds_observe``), table-driven: the phase, reason and message each state
of its Indexed Job and fold pods gives, the rows and pooled metrics written, and no write when nothing changed."""

from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from trainop import crd
from trainop.conditions import stall_update
from trainop.folds_observe import observe_walk_forward
from trainop.status import StatusChange

from tests.operator.test_crd import _leaf_paths, _schema_paths, version_schema
from tests.operator.test_folds import JOB_UID, T0, T1, T2, T3, job, pod, stats
from trainer.api.foldstats import pooled
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import TrainingRunStatus, significant

NOW = datetime(2026, 1, 2, 4, 0, 0, tzinfo=timezone.utc)
WINDOW = {"start": "2024-01-01", "end": "2024-12-06", "refitEvery": "90d"}


def spec(**walk_forward: Any) -> TrainingRunSpec:
    return TrainingRunSpec.model_validate({"symbol": "SOL", "walkForward": {**WINDOW, **walk_forward}})


def with_conditions(the_job: dict[str, Any], *conditions: tuple[str, str]) -> dict[str, Any]:
    """The Job with (type, reason) conditions True, and its start time."""
    out = copy.deepcopy(the_job)
    out["status"]["startTime"] = T0
    out["status"]["conditions"] = [
        {"type": t, "status": "True", "reason": r, "message": f"Job: {r}", "lastTransitionTime": T3}
        for t, r in conditions
    ]
    if any(t == "Complete" for t, _ in conditions):
        out["status"]["completionTime"] = T3
    return out


def complete(the_job: dict[str, Any]) -> dict[str, Any]:
    return with_conditions(
        the_job, ("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")
    )


def failed(the_job: dict[str, Any], reason: str) -> dict[str, Any]:
    return with_conditions(the_job, ("FailureTarget", reason), ("Failed", reason))


def run(status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "sol-tft", "generation": 1}, "status": status or {}}


def apply(body: dict[str, Any], change: StatusChange) -> dict[str, Any]:
    """The run after the merge patch (top-level keys; sub-objects merged one level, as the writer's patch)."""
    status = copy.deepcopy(body.get("status") or {})
    for key, value in change.status.items():
        if isinstance(value, dict) and isinstance(status.get(key), dict):
            status[key] = {**status[key], **value}
        else:
            status[key] = value
    return {**body, "status": status}


ALL_DONE = [pod(i, code=0, at=T2) for i in (3, 1, 0, 2)]

# (case, spec, Job, pods, phase, reason, phrases of the message, FOLDS)
CASES = [
    ("job-created-no-pods", spec(), job(), [], "Pending", "WaitingForPod", ["waiting for the Job's pod"], "0/4"),
    ("folds-running", spec(), job(), [pod(0), pod(1)], "Running", "FoldsRunning", ["2 of 4 folds running; 0 of 4 done"], "0/4"),
    (
        "between-two-folds-stays-running",
        spec(parallelism=1), job(completed="0"), [pod(0, code=0), pod(1, phase="Pending", created=T2, suffix="fghij")],
        "Running", "FoldsRunning", ["no fold running at this moment (the trainer pod is starting); 1 of 4 done"], "1/4",
    ),
    (
        "unschedulable-before-any-fold",
        spec(), job(),
        [{**pod(0, phase="Pending"), "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes"}]}}],
        "Pending", "Unschedulable", ["0/3 nodes"], "0/4",
    ),
    (
        "a-failed-fold-within-max-failed-indexes-runs-on",
        spec(maxFailedIndexes=1), job(failed="1"), [pod(0), pod(1, code=4), pod(2)],
        "Running", "FoldsRunning",
        ["2 of 4 folds running; 0 of 4 done; 1 failed (of at most 1): fold 1 (2024-03-31..2024-06-28): pod sol-tft-train-1-abcde: the loss became NaN/inf"],
        "0/4",
    ),
    ("all-done", spec(), complete(job(completed="0-3")), ALL_DONE, "Succeeded", "Completed", ["all 4 folds succeeded; pooled MASE "], "4/4"),
    (
        "complete-but-a-fold-left-no-statistics",
        spec(), complete(job(completed="0-3")), [*ALL_DONE[:3], pod(2, code=0, message="oops", suffix="zzzzz")],
        "Failed", "FoldStatsMissing",
        ["every fold's pod succeeded, but 1 of 4 folds left no usable statistics: fold 2 (2024-06-29..2024-09-26): pod sol-tft-train-2-zzzzz's termination message is not fold statistics", "cover 3 of 4 folds"],
        "3/4",
    ),
    (
        "failed-index-within-max-failed-indexes",
        spec(maxFailedIndexes=1), failed(job(completed="0,2,3", failed="1"), "FailedIndexes"),
        [pod(0, code=0), pod(1, code=4), pod(2, code=0), pod(3, code=0)],
        "Failed", "FailedIndexes",
        ["1 of 4 folds failed (within maxFailedIndexes 1, so the others ran to the end): fold 1 (2024-03-31..2024-06-28): pod sol-tft-train-1-abcde: the loss became NaN/inf (exit code 4)", "the pooled metrics in status.metrics cover 3 of 4 folds"],
        "3/4",
    ),
    (
        "failed-indexes-over-max-failed-indexes",
        spec(), failed(job(completed="1", failed="0"), "MaxFailedIndexesExceeded"),
        [pod(0, code=2), pod(1, code=0), pod(2, code=143)],
        "Failed", "MaxFailedIndexesExceeded",
        ["1 of 4 folds failed, more than maxFailedIndexes 0; the Job stopped the others: fold 0 (2024-01-01..2024-03-30): pod sol-tft-train-0-abcde: the trainer refused the spec or data (exit code 2)", "cover 1 of 4 folds"],
        "1/4",
    ),
    (
        "retries-exhausted-named",
        spec(backoffLimitPerIndex=0, maxFailedIndexes=2), failed(job(failed="0"), "FailedIndexes"), [pod(0, code=3)],
        "Failed", "FailedIndexes",
        ["1 of 4 folds failed (within maxFailedIndexes 2, so the others ran to the end): fold 0 (2024-01-01..2024-03-30): pod sol-tft-train-0-abcde: checkpoint storage unusable (exit code 3); check the S3 endpoint/credentials; backoffLimitPerIndex 0 reached", "no fold has statistics to pool"],
        "0/4",
    ),
    (
        "deadline-is-not-a-fold",
        spec(), failed(job(completed="0"), "DeadlineExceeded"), [pod(0, code=0), pod(1, code=143)],
        "Failed", "DeadlineExceeded", ["activeDeadlineSeconds reached: Job: DeadlineExceeded; the pooled metrics in status.metrics cover 1 of 4 folds"], "1/4",
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("the_spec", "the_job", "pods", "phase", "reason", "phrases", "display"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_walk_forward_status(
    the_spec: TrainingRunSpec,
    the_job: dict[str, Any],
    pods: list[dict[str, Any]],
    phase: str,
    reason: str,
    phrases: list[str],
    display: str,
) -> None:
    change = observe_walk_forward(run(), the_spec, the_job, pods, NOW, spec_suspend=False)
    status = TrainingRunStatus.model_validate(change.status)
    assert (status.phase, status.reason) == (phase, reason), status.message
    for phrase in phrases:
        assert phrase in (status.message or ""), status.message
    assert status.folds_display == display and status.job_name == "sol-tft-train"
    assert [f.index for f in status.folds or []] == [0, 1, 2, 3]
    done = [f.index for f in status.folds or [] if f.stats is not None]
    if done:
        p = pooled([stats(i) for i in done])
        assert status.metrics is not None
        assert (status.metrics.folds_done, status.metrics.folds_total) == (len(done), 4)
        assert status.metrics.val_mase == significant(p["mase"]) and status.metrics.pinball == significant(
            p["pinball"]
        )
        assert status.metrics.skill_vs_garch == significant(p["baselines"]["garch"]["skill"])
    else:
        assert status.metrics is None
    again = observe_walk_forward(apply(run(), change), the_spec, the_job, pods, NOW, spec_suspend=False)
    assert again.status == {} and again.events == [], "nothing changed: no write, no Event"


def test_transitions_events_and_pods_gone() -> None:
    """Running -> a fold retried (one Restarted Event naming it) -> all done (Succeeded) -> the pods go with the
    Job's TTL: the rows and metrics stay, nothing is written."""
    s = spec()
    body = run()
    running = observe_walk_forward(body, s, job(), [pod(0), pod(1)], NOW, spec_suspend=False)
    assert [e.reason for e in running.events] == ["JobCreated", "Running"]
    body = apply(body, running)
    retried = [pod(0), pod(1, code=3, at=T1), pod(1, created=T2, suffix="fghij")]
    change = observe_walk_forward(body, s, job(), retried, NOW, spec_suspend=False)
    (event,) = change.events
    assert event.reason == "Restarted" and event.message.startswith(
        "fold 1 (2024-03-31..2024-06-28): retry 1 of at most 2 after: pod sol-tft-train-1-abcde: checkpoint storage"
    )
    assert event.message.endswith("; the Job retries it")
    body = apply(body, change)
    final = [pod(i, code=0, at=T3, suffix="fghij" if i == 1 else "abcde") for i in range(4)]
    done = observe_walk_forward(
        body, s, complete(job(completed="0-3")), final + retried[1:2], NOW, spec_suspend=False
    )
    assert [e.reason for e in done.events] == ["Succeeded"]
    body = apply(body, done)
    assert body["status"]["phase"] == "Succeeded" and body["status"]["foldsDisplay"] == "4/4"
    assert body["status"]["restarts"] == 1
    gone = observe_walk_forward(body, s, complete(job(completed="0-3")), [], NOW, spec_suspend=False)
    assert gone.status == {} and gone.events == []
    assert observe_walk_forward(body, s, None, [], NOW, spec_suspend=False).status == {}, "no Job: nothing"


def test_suspended_and_queued() -> None:
    suspended = {**job(), "spec": {"completions": 4, "suspend": True}}
    change = observe_walk_forward(run(), spec(), suspended, [], NOW, spec_suspend=True)
    assert change.status["phase"] == "Suspended" and change.status["foldsDisplay"] == "0/4"
    queued = observe_walk_forward(run(), spec(), suspended, [], NOW, spec_suspend=False)
    assert (queued.status["phase"], queued.status["reason"]) == ("Pending", "Queued")


def test_written_status_is_in_the_crd_schema() -> None:
    change = observe_walk_forward(
        run(), spec(maxFailedIndexes=1), failed(job(completed="0,1,3", failed="2"), "FailedIndexes"),
        [*ALL_DONE[:3], pod(2, code=4, at=T1)], NOW,
        spec_suspend=False,
    )  # fmt: skip
    written = _leaf_paths(change.status)
    schema = _schema_paths(version_schema()["properties"]["status"])
    assert {"folds[].stats", "folds[].exitCode", "metrics.foldsDone", "foldsDisplay"} <= written
    stats_keys = {p for p in written if p.startswith("folds[].stats.")}
    assert stats_keys and not (stats_keys & schema), "the statistics are kept whole (preserve-unknown-fields)"
    assert written - stats_keys <= schema, sorted((written - stats_keys) - schema)
    columns = {c["name"]: c for c in crd.build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]}
    assert columns["Folds"] == {
        "name": "Folds",
        "type": "string",
        "jsonPath": ".status.foldsDisplay",
        "priority": 1,
    }
    assert JOB_UID  # the pods above are the Job's own


def test_a_finished_fold_is_activity_for_the_stall_sweep() -> None:
    """Fold pods report no progress: a fold that finished within stallTimeout keeps a running run from Stalled."""
    s = spec(parallelism=1)
    body = apply(run(), observe_walk_forward(run(), s, job(), [pod(0)], NOW, spec_suspend=False))
    later = NOW + timedelta(minutes=20)
    assert stall_update(body["status"], 15 * 60, later) is not None, "no progress for 20 minutes"
    finished = f"{(later - timedelta(minutes=1)).strftime('%Y-%m-%dT%H:%M:%SZ')}"
    pods = [pod(0, code=0, at=finished), pod(1, created=T2, suffix="fghij")]
    body = apply(body, observe_walk_forward(body, s, job(completed="0"), pods, later, spec_suspend=False))
    assert body["status"]["folds"][0]["finishedAt"] == finished
    assert stall_update(body["status"], 15 * 60, later) is None
