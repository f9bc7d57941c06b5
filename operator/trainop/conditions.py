"""Pure condition logic: metav1.Condition lists, the phase derived from them, and what a Job and its pods
mean.

Why pure: every transition users see (``kubectl describe tr``) is decided here from plain dicts, so it is
unit-tested without an API server. The handlers only fetch the Job and pods, call these functions and write
the result.

Conventions (Kubernetes API conventions, metav1.Condition): ``lastTransitionTime`` changes only when
``status`` changes; ``reason`` is a CamelCase word users can alert on; ``message`` is for humans."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from trainer.api import exitcodes
from trainer.api.status import TrainingRunStatus

JOB_CREATED = "JobCreated"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
STALLED = "Stalled"
SUSPENDED = "Suspended"

PENDING = "Pending"

TRAINER_CONTAINER = "trainer"

# Waiting reasons of a container that users must act on (wrong image, missing Secret...).
WAITING_REASONS = frozenset(
    {
        "ImagePullBackOff",
        "ErrImagePull",
        "InvalidImageName",
        "ErrImageNeverPull",
        "CreateContainerConfigError",
        "CreateContainerError",
        "CrashLoopBackOff",
    }
)
# Reasons of a pending run that deserve a Warning Event and the trainingrun_pending_reason_info metric.
PENDING_WARNING_REASONS = WAITING_REASONS | {"Unschedulable"}
# Pending reasons exported as trainingrun_pending_reason_info (the warnings, plus waiting in a Kueue queue).
PENDING_METRIC_REASONS = PENDING_WARNING_REASONS | {"Queued"}

EXIT_REASONS = {
    exitcodes.INVALID_CONFIG: "InvalidConfig",
    exitcodes.STORAGE_ERROR: "StorageError",
    exitcodes.NAN_LOSS: "NaNLoss",
}

# What each of those means, and what to do about it (condition messages, single- and multi-worker runs).
EXIT_DETAILS = {
    "NaNLoss": "the loss became NaN/inf (exit code 4); lower training.learningRate or gradClip",
    "InvalidConfig": "the trainer refused the spec or data (exit code 2); see the pod log",
    "StorageError": "checkpoint storage unusable (exit code 3); check the S3 endpoint/credentials",
}

Condition = dict[str, Any]


def rfc3339(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def get_condition(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions or () if c.get("type") == type_), None)


def is_true(conditions: Sequence[Mapping[str, Any]] | None, type_: str) -> bool:
    cond = get_condition(conditions, type_)
    return cond is not None and cond.get("status") == "True"


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    type_: str,
    status: str,
    reason: str,
    message: str,
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    """A new list with ``type_`` set; ``lastTransitionTime`` is kept unless ``status`` changes."""
    if status not in ("True", "False", "Unknown"):
        raise ValueError(f"condition status must be True, False or Unknown, not {status!r}")
    result: list[Condition] = []
    found = False
    for cond in conditions or ():
        if cond.get("type") != type_:
            result.append(dict(cond))
            continue
        found = True
        transition = cond.get("lastTransitionTime") if cond.get("status") == status else None
        result.append(
            _condition(type_, status, reason, message, transition or rfc3339(now), observed_generation)
        )
    if not found:
        result.append(_condition(type_, status, reason, message, rfc3339(now), observed_generation))
    return result


def _condition(
    type_: str, status: str, reason: str, message: str, transition: str, generation: int | None
) -> Condition:
    cond: Condition = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "lastTransitionTime": transition,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def derive_phase(conditions: Sequence[Mapping[str, Any]] | None) -> str:
    """Failed > Succeeded > Suspended > Running > Pending (Stalled is a condition of Running, no phase)."""
    for type_ in (FAILED, SUCCEEDED, SUSPENDED, RUNNING):
        if is_true(conditions, type_):
            return type_
    return PENDING


def phase_reason(conditions: Sequence[Mapping[str, Any]] | None) -> tuple[str, str]:
    """(reason, message) explaining the phase, e.g. ('Unschedulable', '0/3 nodes ...') while Pending."""
    phase = derive_phase(conditions)
    cond = get_condition(conditions, phase if phase != PENDING else RUNNING)
    if cond is None and phase == PENDING:
        cond = get_condition(conditions, JOB_CREATED)
    if cond is None:
        return ("Created", "waiting for the operator to create the Job")
    return (str(cond.get("reason", "")), str(cond.get("message", "")))


# --- Job and pods -> conditions -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """What a Job and its pods say: condition updates (type, status, reason, message) and counters."""

    updates: list[tuple[str, str, str, str]] = field(default_factory=list)
    restarts: int = 0
    start_time: str | None = None
    completion_time: str | None = None


def _job_conditions(job: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    conds = (job.get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if c.get("status") == "True"}


def trainer_status(pod: Mapping[str, Any]) -> Mapping[str, Any]:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == TRAINER_CONTAINER), statuses[0] if statuses else {})


def terminated(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    state = trainer_status(pod)
    term = (state.get("state") or {}).get("terminated") or (state.get("lastState") or {}).get("terminated")
    return term if isinstance(term, Mapping) else None


def _pod_sort_key(pod: Mapping[str, Any]) -> str:
    term = terminated(pod) or {}
    return str(term.get("finishedAt") or (pod.get("metadata") or {}).get("creationTimestamp") or "")


def restarts(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> int:
    """Failed attempts: the Job's ``status.failed`` (or the failed pods, if more: preemptions ignored by the
    podFailurePolicy are not counted there) plus in-place container restarts."""
    failed_pods = sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Failed")
    in_place = sum(int(trainer_status(p).get("restartCount") or 0) for p in pods)
    return max(int((job.get("status") or {}).get("failed") or 0), failed_pods) + in_place


def failure_reason(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Why a Job failed, in words users act on: NaNLoss, InvalidConfig, OOMKilled, DeadlineExceeded..."""
    conds = _job_conditions(job)
    cond = conds.get("Failed") or conds.get("FailureTarget") or {}
    job_reason = str(cond.get("reason") or "Failed")
    job_message = str(cond.get("message") or "the Job failed")
    if job_reason == "DeadlineExceeded":
        return "DeadlineExceeded", f"activeDeadlineSeconds reached: {job_message}"
    failed = sorted((p for p in pods if terminated(p)), key=_pod_sort_key)
    last = terminated(failed[-1]) if failed else None
    code: int | None = None
    match = re.search(r"exit code (\d+)", job_message)
    if job_reason == "PodFailurePolicy" and match:
        code = int(match.group(1))
    elif last is not None and last.get("exitCode") is not None:
        code = int(last["exitCode"])
    if code in EXIT_REASONS:
        reason = EXIT_REASONS[code]
        return reason, EXIT_DETAILS[reason]
    if last is not None and last.get("reason") == "OOMKilled":
        return "OOMKilled", "the trainer ran out of memory (OOMKilled); raise resources.limits.memory"
    if job_reason == "BackoffLimitExceeded":
        tail = f"; last exit code {code}" if code is not None else ""
        return "BackoffLimitExceeded", f"backoffLimit reached{tail}: {job_message}"
    return job_reason, job_message


def pending_reason(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Why an active Job has no running trainer: ImagePullBackOff, Unschedulable, Restarting, Starting..."""
    live = [p for p in pods if (p.get("status") or {}).get("phase") in (None, "Pending")]
    for pod in live:
        waiting = (trainer_status(pod).get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in WAITING_REASONS:
            return str(waiting["reason"]), str(waiting.get("message") or waiting["reason"])
        status = pod.get("status") or {}
        if status.get("reason") in WAITING_REASONS:  # some runtimes report it for the whole pod
            return str(status["reason"]), str(status.get("message") or status["reason"])
    for pod in live:
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("status") == "False":
                reason = str(cond.get("reason") or "Unschedulable")
                return reason, str(cond.get("message") or "no node fits the pod")
    if live:
        return "Starting", "the trainer pod is starting"
    if any((p.get("status") or {}).get("phase") == "Failed" for p in pods):
        return "Restarting", "the previous attempt failed; waiting for the next pod"
    return "WaitingForPod", "waiting for the Job's pod"


def job_to_conditions(
    job: Mapping[str, Any] | None, pods: Sequence[Mapping[str, Any]], *, spec_suspend: bool = False
) -> Observation:
    """Condition updates from a Job and its pods. No Job: no updates (the caller keeps what it had)."""
    if job is None:
        return Observation()
    status = job.get("status") or {}
    conds = _job_conditions(job)
    name = (job.get("metadata") or {}).get("name", "")
    updates = [(JOB_CREATED, "True", "JobCreated", f"Job {name} created")]
    count = restarts(job, pods)
    start, end = status.get("startTime"), status.get("completionTime")
    if "Complete" in conds or "SuccessCriteriaMet" in conds:
        message = str((conds.get("Complete") or conds.get("SuccessCriteriaMet") or {}).get("message") or "")
        updates += [
            (SUCCEEDED, "True", "Completed", message or "training finished"),
            (FAILED, "False", "Completed", "training finished"),
            (RUNNING, "False", "Completed", "training finished"),
            (SUSPENDED, "False", "Completed", "training finished"),
        ]
        return Observation(updates, count, start, end)
    if "Failed" in conds or "FailureTarget" in conds:
        reason, message = failure_reason(job, pods)
        end = end or str(
            (conds.get("Failed") or conds.get("FailureTarget") or {}).get("lastTransitionTime") or ""
        )
        updates += [
            (FAILED, "True", reason, message),
            (SUCCEEDED, "False", reason, message),
            (RUNNING, "False", reason, message),
            (SUSPENDED, "False", reason, message),
        ]
        return Observation(updates, count, start, end or None)
    updates += [
        (SUCCEEDED, "False", "NotFinished", "training has not finished"),
        (FAILED, "False", "NotFailed", "no failure"),
    ]
    suspended = bool((job.get("spec") or {}).get("suspend")) or "Suspended" in conds
    if suspended and spec_suspend:
        updates += [
            (SUSPENDED, "True", "SuspendedByUser", "spec.suspend is true; the Job's pods are removed"),
            (RUNNING, "False", "Suspended", "spec.suspend is true"),
        ]
    elif suspended:
        updates += [
            (SUSPENDED, "False", "Queued", "the Job is suspended by a queue (Kueue) until admitted"),
            (RUNNING, "False", "Queued", "the Job is suspended by a queue (Kueue) until admitted"),
        ]
    else:
        updates.append((SUSPENDED, "False", "NotSuspended", "the Job is not suspended"))
        running = [
            p
            for p in pods
            if (p.get("status") or {}).get("phase") == "Running"
            and not (p.get("metadata") or {}).get("deletionTimestamp")
        ]
        workers = int((job.get("spec") or {}).get("parallelism") or 1)
        if running and workers > 1:
            updates.append(_gang_running(job, pods, running, workers))
        elif running:
            pod = running[0]
            node = (pod.get("spec") or {}).get("nodeName")
            where = f" on node {node}" if node else ""
            pod_name = (pod.get("metadata") or {}).get("name", "")
            updates.append((RUNNING, "True", "PodRunning", f"pod {pod_name} is running{where}"))
        elif finishing := _finishing(pods):
            updates.append(finishing)
        else:
            reason, message = pending_reason(job, pods)
            updates.append((RUNNING, "False", reason, message))
    return Observation(updates, count, start, end)


# Exit codes the podFailurePolicy turns into a failed Job at once (``builders.pod_failure_policy``).
FAIL_JOB_EXIT_CODES = frozenset({exitcodes.INVALID_CONFIG, exitcodes.NAN_LOSS})


def _finishing(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str, str, str] | None:
    """The moment between the trainer's exit and the Job controller's verdict: no live pod, and the newest one
    either succeeded (the run is finishing, not back to Pending) or exited with a code that fails the Job at once
    (the run is failing, not Restarting). None otherwise."""
    if any((p.get("status") or {}).get("phase") in (None, "Pending", "Running") for p in pods):
        return None
    ended = sorted((p for p in pods if terminated(p)), key=_pod_sort_key)
    if not ended:
        return None
    newest, term = ended[-1], terminated(ended[-1]) or {}
    name = (newest.get("metadata") or {}).get("name", "")
    if (newest.get("status") or {}).get("phase") == "Succeeded":
        return (
            RUNNING,
            "True",
            "TrainerFinished",
            f"pod {name}: the trainer finished; the Job is completing",
        )
    code = term.get("exitCode")
    if isinstance(code, int) and code in FAIL_JOB_EXIT_CODES:
        reason = EXIT_REASONS[code]
        return (RUNNING, "False", reason, f"{EXIT_DETAILS[reason]}; the Job fails without a retry")
    return None


def _gang_running(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    running: Sequence[Mapping[str, Any]],
    workers: int,
) -> tuple[str, str, str, str]:
    """A multi-worker Job runs when all its workers do (they cannot train without each other); until then, why
    the others do not (Unschedulable, ImagePullBackOff...), else that they are starting."""
    if len(running) >= workers:
        return (RUNNING, "True", "PodsRunning", f"all {workers} workers are running")
    reason, message = pending_reason(job, pods)
    if reason == "Starting":
        message = f"{len(running)} of {workers} workers are running; the others are starting"
    return (RUNNING, "False", reason, message)


def apply_updates(
    conditions: Sequence[Mapping[str, Any]] | None,
    updates: Sequence[tuple[str, str, str, str]],
    now: datetime,
    observed_generation: int | None = None,
) -> list[Condition]:
    result = [dict(c) for c in conditions or ()]
    for type_, status, reason, message in updates:
        result = set_condition(result, type_, status, reason, message, now, observed_generation)
    order = {t: i for i, t in enumerate((JOB_CREATED, RUNNING, SUCCEEDED, FAILED, STALLED, SUSPENDED))}
    return sorted(result, key=lambda c: order.get(str(c.get("type")), 99))


# --- stall detection ----------------------------------------------------------------------------------------


def _parsed(status: Mapping[str, Any] | TrainingRunStatus) -> TrainingRunStatus:
    return status if isinstance(status, TrainingRunStatus) else TrainingRunStatus.parse(status)


def last_activity(status: Mapping[str, Any] | TrainingRunStatus) -> datetime | None:
    """The latest of the trainer's last progress report, the moment the run became Running and the end of
    a walk-forward run's last finished fold."""
    parsed = _parsed(status)
    progress = parse_time(parsed.progress.last_progress_time if parsed.progress else None)
    running = get_condition(parsed.condition_list(), RUNNING)
    since = (
        parse_time(str(running.get("lastTransitionTime")))
        if running and running.get("status") == "True"
        else None
    )
    # A walk-forward run's pods report no progress of their own here: each finished fold is activity too.
    folds = [parse_time(f.finished_at) for f in parsed.folds or ()]
    times = [t for t in (progress, since, *folds) if t is not None]
    return max(times) if times else None


def stall_update(
    status: Mapping[str, Any] | TrainingRunStatus, timeout_seconds: float, now: datetime
) -> tuple[str, str, str, str] | None:
    """The Stalled condition update the timer should write, or None when nothing changes."""
    status = _parsed(status)
    conditions = status.condition_list()
    stalled = is_true(conditions, STALLED)
    if derive_phase(conditions) != RUNNING:
        if stalled:
            return (STALLED, "False", "NotRunning", "the run is no longer running")
        return None
    last = last_activity(status)
    if last is None:
        return None
    age = (now - last).total_seconds()
    if age > timeout_seconds and not stalled:
        return (
            STALLED,
            "True",
            "NoProgress",
            f"no progress for {age:.0f}s (stallTimeout {timeout_seconds:.0f}s); last at {rfc3339(last)}",
        )
    if age <= timeout_seconds and stalled:
        return (STALLED, "False", "ProgressResumed", f"progress reported at {rfc3339(last)}")
    return None
