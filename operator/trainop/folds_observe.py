"""A walk-forward run's status from its Indexed Job and pods (pure): the fold rows and pooled metrics of
``trainop.folds``, and the conditions they imply.

Why conditions of their own: a walk-forward Job's conditions say less than the run's phase must. The Job
completes when every fold's pod has exited 0, but the run has succeeded only when every fold's statistics are
recorded as well (a fold without them has nothing to pool); otherwise it fails as ``FoldStatsMissing``, naming
the folds. When the Job fails -- ``FailedIndexes`` once all folds ran and some failed within
``maxFailedIndexes``, ``MaxFailedIndexesExceeded`` as soon as more failed, ``PodFailurePolicy``,
``DeadlineExceeded`` -- its message is about pods; the run's names the failed folds, their windows and why (the
exit code's meaning, as for a single training), and how many folds the pooled metrics still cover. While the Job
runs, the run is Running from its first fold on, also in the moments between two folds (with parallelism 1 it
would otherwise flap between Running and Pending at every fold), unless the next fold cannot start for a reason
users must act on (Unschedulable, ImagePullBackOff...).

Everything else -- JobCreated, Suspended by the user or a queue, restarts, start and completion times, one
Event per transition, no write when nothing changed -- is what ``trainop.status`` does for any run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from trainer.api.spec import TrainingRunSpec, WalkForwardSpec
from trainer.api.status import FoldStatus, TrainingRunStatus

from .conditions import (
    FAILED,
    PENDING_WARNING_REASONS,
    RUNNING,
    STALLED,
    SUCCEEDED,
    SUSPENDED,
    failure_reason,
    get_condition,
    job_to_conditions,
    pending_reason,
)
from .folds import Folds, aggregate, window_of
from .gang import job_complete, job_failed
from .status import StatusChange, Update, compose

FINISH_TYPES = (SUCCEEDED, FAILED, RUNNING, SUSPENDED)
#: Running=False reasons of a suspended Job (``job_to_conditions``), left as they are.
SUSPENDED_REASONS = ("Suspended", "Queued")


def _finished(type_: str, reason: str, message: str) -> list[Update]:
    """The run ended: ``type_`` (Succeeded or Failed) True, the others False, all with one reason."""
    return [(t, "True" if t == type_ else "False", reason, message) for t in FINISH_TYPES]


def _named(rows: Sequence[FoldStatus]) -> str:
    """'fold 1 (2024-01-01..2024-03-30): pod x: the loss became NaN/inf ...; fold 3 (...): ...'."""
    return "; ".join(f"{window_of(r)}: {r.message or r.reason or r.phase}" for r in rows)


def _covered(folds: Folds) -> str:
    done = len(folds.done)
    if not done:
        return "no fold has statistics to pool"
    return f"the pooled metrics in status.metrics cover {done} of {folds.total} folds"


def _job_reason(job: Mapping[str, Any]) -> str:
    conds = [c for c in (job.get("status") or {}).get("conditions") or [] if c.get("status") == "True"]
    found: Mapping[str, Any] = next(
        (c for t in (FAILED, "FailureTarget") for c in conds if c.get("type") == t), {}
    )
    return str(found.get("reason") or "Failed")


def failed_updates(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], folds: Folds, wf: WalkForwardSpec
) -> list[Update]:
    """The run failed with its Job: the Job's reason, the failed folds named with their windows and why."""
    reason, failed, most = _job_reason(job), folds.failed, min(wf.max_failed_indexes, folds.total)
    if not failed:  # not the folds' doing (activeDeadlineSeconds...): what the Job and its pods say
        reason, message = failure_reason(job, pods)
        return _finished(FAILED, reason, f"{message}; {_covered(folds)}")
    count = f"{len(failed)} of {folds.total} folds failed"
    if reason == "MaxFailedIndexesExceeded":
        head = f"{count}, more than maxFailedIndexes {most}; the Job stopped the others"
    elif reason == "FailedIndexes" and most:
        head = f"{count} (within maxFailedIndexes {most}, so the others ran to the end)"
    else:
        head = count
    return _finished(FAILED, reason, f"{head}: {_named(failed)}; {_covered(folds)}")


def completed_updates(folds: Folds) -> list[Update]:
    """The Job completed: Succeeded with every fold's statistics, else Failed/FoldStatsMissing naming the folds."""
    missing = [r for r in folds.rows if r not in folds.done]
    if missing:
        message = (
            f"every fold's pod succeeded, but {len(missing)} of {folds.total} folds left no usable statistics: "
            f"{_named(missing)}; {_covered(folds)}"
        )
        return _finished(FAILED, "FoldStatsMissing", message)
    metrics = folds.metrics or {}
    summary = f"all {folds.total} folds succeeded"
    if metrics.get("valMase") is not None:
        summary += f"; pooled MASE {metrics['valMase']:.4g}, pinball {metrics.get('pinball', 0.0):.4g}"
    return _finished(SUCCEEDED, "Completed", summary)


def running_update(
    job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]], folds: Folds, wf: WalkForwardSpec
) -> Update:
    """Running while the Job's folds run (and between two folds once one has started)."""
    done, failed, running = len(folds.done), folds.failed, folds.running
    tail = f"; {done} of {folds.total} done"
    if failed:
        tail += (
            f"; {len(failed)} failed (of at most {min(wf.max_failed_indexes, folds.total)}): {_named(failed)}"
        )
    if running:
        return (RUNNING, "True", "FoldsRunning", f"{len(running)} of {folds.total} folds running{tail}")
    reason, message = pending_reason(job, pods)
    started = any(r.phase != "Pending" or r.reason == "Retrying" for r in folds.rows)
    if started and reason not in PENDING_WARNING_REASONS:
        return (RUNNING, "True", "FoldsRunning", f"no fold running at this moment ({message}){tail}")
    return (RUNNING, "False", reason, message)


def walk_forward_updates(
    job: Mapping[str, Any],
    pods: Sequence[Mapping[str, Any]],
    folds: Folds,
    wf: WalkForwardSpec,
    base: Sequence[Update],
) -> list[Update]:
    """The condition updates of a walk-forward run: those of ``job_to_conditions`` (``base``), with the
    finish and Running decided by the folds."""
    if job_complete(job) or job_failed(job):
        ended = completed_updates(folds) if job_complete(job) else failed_updates(job, pods, folds, wf)
        return [u for u in base if u[0] not in FINISH_TYPES] + ended
    if any(u[0] == RUNNING and u[2] in SUSPENDED_REASONS for u in base):
        return list(base)
    return [u for u in base if u[0] != RUNNING] + [running_update(job, pods, folds, wf)]


def _retry_message(folds: Folds) -> str | None:
    """What the Restarted Event says when a fold's pod failed and the Job retries (or ends) it."""
    rows = [r for r in folds.rows if r.reason == "Retrying"] or list(folds.failed)
    if not rows:
        return None
    row = rows[-1]
    then = "the Job retries it" if row.reason == "Retrying" else "it failed for good"
    return f"{window_of(row)}: {row.message}; {then}"


def observe_walk_forward(
    run: Mapping[str, Any],
    spec: TrainingRunSpec,
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    spec_suspend: bool,
) -> StatusChange:
    """The status change a walk-forward run's Job and pods imply: conditions, fold rows, FOLDS, pooled metrics.
    No Job (deleted by its TTL): nothing, the recorded folds stay."""
    wf = spec.walk_forward
    if job is None or wf is None:
        return StatusChange()
    status = TrainingRunStatus.parse(run.get("status"))
    folds = aggregate(spec, status.folds, job, pods)
    obs = job_to_conditions(job, pods, spec_suspend=spec_suspend)
    updates = walk_forward_updates(job, pods, folds, wf, obs.updates)
    finished = any(u[0] in (SUCCEEDED, FAILED) and u[1] == "True" for u in updates)
    if finished and get_condition(status.condition_list(), STALLED) is not None:
        updates.append((STALLED, "False", "NotRunning", "the run finished"))
    return compose(
        run,
        updates,
        now,
        restart_message=_retry_message(folds),
        jobName=(job.get("metadata") or {}).get("name"),
        restarts=max(obs.restarts, status.restarts or 0),  # the failed pods of a retried fold may be gone
        startTime=obs.start_time,
        completionTime=obs.completion_time,
        folds=folds.dump(),
        foldsDisplay=folds.display,
        metrics=folds.metrics,
    )
