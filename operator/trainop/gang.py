"""Gang restart of multi-worker TrainingRuns (pure): what to do next about a run's Indexed Job and its pods.

Why a gang restart: a batch/v1 Job replaces one failed pod, never all of them, but a data-parallel run cannot go
on without any of its workers -- the others block in a collective until they give up. So the Job of a
multi-worker run has ``backoffLimit: 0`` and fails as a whole at its first failed worker, and the operator
restarts the gang as JobSet does: a new Job (the next attempt) of all workers, which resume from the last
checkpoint.

Why pure, and why the state lives in the run's status (``attempt``, ``restarts``, ``failures``): the operator
may be killed between any two steps of a restart (write the status, delete the Job and its pods, create the
Job of the next attempt). Each step is decided afresh from what the API holds, so none is done twice and none
is lost: only a failed Job *of the current attempt* is judged (the status write that moves ``attempt`` on is
what counts it, once), a Job of an older attempt is deleted, and the Job of the current attempt is created
when no Job and no live pod of an older one is left (two gangs at once would meet in one rendezvous and write
one checkpoint prefix). ``tests/operator/test_gang.py`` walks every intermediate state.

Who failed: one worker's failure makes the others exit 5 (PEER_LOST, a symptom) or, when the Job controller
terminates them, 143 after a checkpoint. The culprit is the earliest failure that is not PEER_LOST; it counts
against ``spec.backoffLimit`` unless the cluster took a pod away (a DisruptionTarget condition) or the
earliest failure was itself a SIGTERM (143: preempted, checkpoint written). Exit codes 2 (invalid config) and
4 (NaN loss) would repeat on every attempt: the run fails at once, as a single-worker run does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from trainer.api import exitcodes
from trainer.api.spec import API_GROUP
from trainer.api.status import TrainingRunStatus

from .conditions import EXIT_DETAILS, EXIT_REASONS, FAILED, SUCCEEDED, is_true, terminated

#: On the Job and its pods of a multi-worker run: the attempt (0, 1, ...) they belong to.
ATTEMPT_LABEL = f"{API_GROUP}/attempt"
#: The worker index the Job controller gives each pod of an Indexed Job (label and annotation).
INDEX_KEY = "batch.kubernetes.io/job-completion-index"
# An Indexed Job's pod: <job>-<index>-<5 random characters>.
_INDEXED_POD_RE = re.compile(r"-(\d+)-[a-z0-9]{5}$")
# The Job controller's message when a podFailurePolicy rule fails the Job.
_POLICY_MESSAGE_RE = re.compile(r"pod [^/\s]+/(\S+) failed with exit code (\d+)")
_UNKNOWN_TIME = "~"  # sorts after every RFC 3339 time
#: What a trainer pod's exit code means, in messages (a worker of a gang, a fold of a walk-forward).
EXIT_MEANINGS = {
    exitcodes.CRASH: "crashed; see its log",
    exitcodes.INVALID_CONFIG: "invalid config",
    exitcodes.STORAGE_ERROR: "checkpoint storage unusable",
    exitcodes.NAN_LOSS: "NaN loss",
    exitcodes.PEER_LOST: "lost its peers",
    137: "killed",
    139: "segmentation fault",
    exitcodes.PREEMPTED: "terminated; checkpoint written",
}

Action = Literal["Nothing", "Fail", "Restart", "DeleteJob", "Wait", "CreateJob"]


@dataclass(frozen=True)
class Gang:
    """The gang's state in the run's status."""

    attempt: int = 0
    restarts: int = 0
    failures: int = 0

    @classmethod
    def of(cls, status: Mapping[str, Any] | TrainingRunStatus | None) -> Gang:
        parsed = status if isinstance(status, TrainingRunStatus) else TrainingRunStatus.parse(status)
        return cls(parsed.attempt or 0, parsed.restarts or 0, parsed.failures or 0)


@dataclass(frozen=True)
class Worker:
    """A failed worker: which one, and how it ended."""

    index: int | None
    pod: str
    exit_code: int | None = None
    reason: str = ""  # the container's terminated reason (OOMKilled, Error) or the pod's (Evicted)
    message: str = ""
    finished_at: str = _UNKNOWN_TIME
    disrupted: str | None = None  # the DisruptionTarget condition, when the cluster took the pod away

    @property
    def who(self) -> str:
        return f"worker {self.index} (pod {self.pod})" if self.index is not None else f"pod {self.pod}"

    def describe(self) -> str:
        who = self.who
        if self.disrupted is not None:
            return f"{who} was disrupted ({self.disrupted})"
        if self.exit_code is not None:
            meaning = "OOMKilled" if self.reason == "OOMKilled" else EXIT_MEANINGS.get(self.exit_code)
            return f"{who} exited {self.exit_code} ({meaning or self.reason or 'error'})"
        return f"{who} failed ({': '.join(t for t in (self.reason or 'Failed', self.message) if t)})"


@dataclass(frozen=True)
class Decision:
    """The next step. ``gang``: the state to write (Fail, Restart) or the current one. ``reason``/``message``:
    the condition (Fail: Failed; Restart: Running=False) and the Event. ``job_uid``: the Job to delete.
    ``pods``: pods to delete that are not being deleted yet (DeleteJob, Wait)."""

    action: Action
    gang: Gang
    reason: str = ""
    message: str = ""
    job_uid: str = ""
    pods: tuple[str, ...] = ()
    completion_time: str | None = None


def attempt_of(obj: Mapping[str, Any]) -> int:
    """The attempt label of a Job or pod (0 without one: a Job of an earlier operator version)."""
    value = str(((obj.get("metadata") or {}).get("labels") or {}).get(ATTEMPT_LABEL, "0"))
    return int(value) if value.isdigit() else 0


def worker_index(pod: Mapping[str, Any]) -> int | None:
    """The pod's completion index: its label or annotation, else the number in its name."""
    meta = pod.get("metadata") or {}
    for source in (meta.get("labels") or {}, meta.get("annotations") or {}):
        value = str(source.get(INDEX_KEY, ""))
        if value.isdigit():
            return int(value)
    match = _INDEXED_POD_RE.search(str(meta.get("name") or ""))
    return int(match.group(1)) if match else None


def owned_by(pod: Mapping[str, Any], job: Mapping[str, Any]) -> bool:
    uid = (job.get("metadata") or {}).get("uid")
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return uid is not None and any(r.get("uid") == uid for r in refs)


def deleting(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def live(pod: Mapping[str, Any]) -> bool:
    """Still running or about to (it may hold a worker's hostname, or write a checkpoint)."""
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def job_failed(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Failed", "FailureTarget") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def job_complete(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Complete", "SuccessCriteriaMet") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _failed_condition(job: Mapping[str, Any]) -> Mapping[str, Any]:
    conds = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    return next((c for t in ("Failed", "FailureTarget") for c in conds if c.get("type") == t), {})


def failure_of(pod: Mapping[str, Any]) -> Worker | None:
    """How a pod failed, or None while it has not (or when its trainer exited 0)."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    name, index = str(meta.get("name") or ""), worker_index(pod)
    disruption = next(
        (
            c
            for c in status.get("conditions") or []
            if c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        ),
        None,
    )
    disrupted = None
    if disruption is not None:
        parts = (disruption.get("reason"), disruption.get("message"))
        disrupted = ": ".join(str(t) for t in parts if t) or "DisruptionTarget"
    term = terminated(pod)
    if term is not None and term.get("exitCode") not in (None, 0):
        return Worker(
            index,
            name,
            int(term["exitCode"]),
            str(term.get("reason") or ""),
            str(term.get("message") or ""),
            str(term.get("finishedAt") or _UNKNOWN_TIME),
            disrupted,
        )
    if status.get("phase") == "Failed" or disruption is not None:
        when = (disruption or {}).get("lastTransitionTime") or _UNKNOWN_TIME
        return Worker(
            index,
            name,
            None,
            str(status.get("reason") or ""),
            str(status.get("message") or ""),
            str(when),
            disrupted,
        )
    return None


def _order(worker: Worker) -> tuple[str, bool]:
    """Earliest first; at the same second a real failure before a SIGTERM (the Job controller's doing)."""
    return (worker.finished_at, worker.exit_code == exitcodes.PREEMPTED)


def decide(
    status: Mapping[str, Any] | TrainingRunStatus | None,
    *,
    backoff_limit: int,
    workers: int,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> Decision:
    """The next step for a multi-worker run, from its status, its Job (if any) and all its pods."""
    parsed = status if isinstance(status, TrainingRunStatus) else TrainingRunStatus.parse(status)
    gang = Gang.of(parsed)
    conditions = parsed.condition_list()
    if is_true(conditions, FAILED) or is_true(conditions, SUCCEEDED):
        return Decision("Nothing", gang, message="the run has finished")
    if job is not None:
        name = str((job.get("metadata") or {}).get("name") or "")
        own = [p for p in pods if owned_by(p, job)]
        to_delete = tuple(str(p["metadata"]["name"]) for p in own if not deleting(p))
        attempt = attempt_of(job)
        # A finished Job of the current attempt is judged even while it is being deleted (ttlSecondsAfterFinished
        # deletes it in the foreground): else its failure, or its success, would be lost with it.
        if attempt >= gang.attempt and job_failed(job):
            return judge(gang, attempt, job, own, backoff_limit=backoff_limit, workers=workers)
        if attempt >= gang.attempt and job_complete(job):
            return Decision("Nothing", gang, message=f"Job {name} has completed")
        if deleting(job):
            return Decision("Wait", gang, message=f"Job {name} is being deleted", pods=to_delete)
        if attempt < gang.attempt:
            uid = str((job.get("metadata") or {}).get("uid") or "")
            message = f"Job {name} is of attempt {attempt}; attempt {gang.attempt} replaces it"
            return Decision("DeleteJob", gang, message=message, job_uid=uid, pods=to_delete)
        return Decision("Nothing", gang)
    lingering = [p for p in pods if live(p)]
    if lingering:
        names = ", ".join(sorted(str(p["metadata"]["name"]) for p in lingering))
        to_delete = tuple(sorted(str(p["metadata"]["name"]) for p in lingering if not deleting(p)))
        return Decision(
            "Wait", gang, message=f"waiting for the pods of the last attempt to go: {names}", pods=to_delete
        )
    return Decision("CreateJob", gang, message=f"creating the Job of attempt {gang.attempt}")


def judge(
    gang: Gang,
    attempt: int,
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    *,
    backoff_limit: int,
    workers: int,
) -> Decision:
    """A failed Job of the current attempt: fail the run, or restart the gang (counted or not)."""
    cond = _failed_condition(job)
    job_reason, job_message = str(cond.get("reason") or "Failed"), str(cond.get("message") or "")
    ended = str(cond.get("lastTransitionTime") or "") or None
    fail = Gang(attempt, gang.restarts, gang.failures)
    if job_reason == "DeadlineExceeded":
        message = f"activeDeadlineSeconds reached in attempt {attempt}: {job_message or 'the Job failed'}"
        return Decision("Fail", fail, "DeadlineExceeded", message, completion_time=ended)
    failed = sorted((w for w in map(failure_of, pods) if w is not None), key=_order)
    if not failed:  # the pods are gone: the Job controller's message names the pod and its exit code
        match = _POLICY_MESSAGE_RE.search(job_message)
        if match:
            probe = {"metadata": {"name": match.group(1)}}
            failed = [Worker(worker_index(probe), match.group(1), int(match.group(2)))]
    permanent = [w for w in failed if w.exit_code in (exitcodes.INVALID_CONFIG, exitcodes.NAN_LOSS)]
    if permanent:
        worker = permanent[0]
        reason = EXIT_REASONS[int(worker.exit_code or 0)]
        message = f"{worker.who}: {EXIT_DETAILS[reason]}"
        return Decision("Fail", fail, reason, message, completion_time=ended)
    causes = [w for w in failed if w.exit_code != exitcodes.PEER_LOST]
    disrupted = [w for w in failed if w.disrupted is not None]
    restart_all = f"restarting all {workers} workers from the last checkpoint"
    if disrupted or (causes and causes[0].exit_code == exitcodes.PREEMPTED):
        worker = disrupted[0] if disrupted else causes[0]
        message = f"{worker.describe()}; {restart_all} (preemptions do not count against backoffLimit)"
        return Decision("Restart", Gang(attempt + 1, gang.restarts + 1, gang.failures), "Preempted", message)
    culprit = causes[0] if causes else (failed[0] if failed else None)
    what = (
        culprit.describe()
        if culprit
        else f"Job {job['metadata'].get('name')} failed ({job_reason}: {job_message})"
    )
    counted = gang.failures + 1
    if counted > backoff_limit:
        message = f"{what}; backoffLimit {backoff_limit} reached ({gang.failures} counted restarts so far)"
        return Decision("Fail", fail, "BackoffLimitExceeded", message, completion_time=ended)
    reason = "WorkerFailed"
    if culprit is not None and culprit.reason == "OOMKilled":
        reason = "OOMKilled"
    elif culprit is not None and culprit.exit_code == exitcodes.STORAGE_ERROR:
        reason = "StorageError"
    message = f"{what}; {restart_all} (restart {counted} of at most {backoff_limit})"
    return Decision("Restart", Gang(attempt + 1, gang.restarts + 1, counted), reason, message)
