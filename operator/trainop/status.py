"""From an observation to a status patch and the Events that explain it (pure).

Why separate from ``conditions``: this is where "what changed" is decided -- the patch carries only fields
that differ (no write when nothing changed, which keeps 1,000 runs cheap) and each user-visible transition
yields exactly one Event (Failed/NaNLoss, Pending/Unschedulable, Stalled...), however often a Job or pod event
is re-delivered. The current status is read, and the patch made, through the shared model
``trainer.api.status.TrainingRunStatus``, so a key the operator writes is the key the CRD and the trainer know."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from trainer.api.status import ResolvedSpec, TrainingRunStatus

from .conditions import (
    FAILED,
    JOB_CREATED,
    PENDING_WARNING_REASONS,
    RUNNING,
    STALLED,
    SUCCEEDED,
    SUSPENDED,
    apply_updates,
    derive_phase,
    get_condition,
    job_to_conditions,
    phase_reason,
)
from .gang import Decision

Update = tuple[str, str, str, str]
_STATUS_KEYS = {f.alias or name for name, f in TrainingRunStatus.model_fields.items()}


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class StatusChange:
    """``status``: fields to merge-patch (empty: no change); ``events`` to post; the phase transition."""

    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    old_phase: str | None = None
    phase: str = "Pending"
    reason: str = ""


def _events(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> list[Event]:
    events: list[Event] = []
    for cond in new:
        type_, status = cond["type"], cond["status"]
        reason, message = str(cond.get("reason", "")), str(cond.get("message", ""))
        before = get_condition(old, type_) or {}
        became = status == "True" and before.get("status") != "True"
        ended = status != "True" and before.get("status") == "True"
        if type_ == JOB_CREATED and became:
            events.append(Event("Normal", "JobCreated", message))
        elif type_ == RUNNING and became:
            events.append(Event("Normal", "Running", message))
        elif (
            type_ == RUNNING
            and status == "False"
            and reason in PENDING_WARNING_REASONS
            and (reason != before.get("reason") or before.get("status") == "True")
        ):
            events.append(Event("Warning", reason, message))
        elif type_ == SUCCEEDED and became:
            events.append(Event("Normal", "Succeeded", message))
        elif type_ == FAILED and status == "True" and (became or reason != before.get("reason")):
            events.append(Event("Warning", reason, message))  # also when a later look refines the reason
        elif type_ == SUSPENDED and became:
            events.append(Event("Normal", "Suspended", message))
        elif type_ == SUSPENDED and ended:
            events.append(Event("Normal", "Resumed", "the Job is no longer suspended"))
        elif type_ == STALLED and became:
            events.append(Event("Warning", "Stalled", message))
        elif type_ == STALLED and ended:
            events.append(Event("Normal", reason or "ProgressResumed", message))
    return events


def compose(
    run: Mapping[str, Any],
    updates: Sequence[Update],
    now: datetime,
    *,
    restart_message: str | None = None,
    **fields: Any,
) -> StatusChange:
    """Apply condition updates (and plain fields such as jobName, restarts) to the run's current status.
    ``restart_message``: what the Restarted Event says when restarts grows (a gang restart names its worker)."""
    unknown = set(fields) - _STATUS_KEYS
    if unknown:
        raise TypeError(f"not fields of a TrainingRun status: {', '.join(sorted(unknown))}")
    status = TrainingRunStatus.parse(run.get("status"))
    generation = (run.get("metadata") or {}).get("generation")
    old_conditions = status.condition_list()
    conditions = apply_updates(old_conditions, updates, now, generation)
    reason, message = phase_reason(conditions)
    wanted = TrainingRunStatus.model_validate(
        {
            "conditions": conditions,
            "phase": derive_phase(conditions),
            "reason": reason,
            "message": message,
            **{k: v for k, v in fields.items() if v is not None},
            **({"observedGeneration": generation} if generation is not None else {}),
        }
    )
    current = status.dump()
    patch = {k: v for k, v in wanted.dump().items() if current.get(k) != v}
    events = _events(old_conditions, conditions)
    old_restarts = status.restarts or 0
    if (wanted.restarts or 0) > old_restarts:
        events.append(
            Event(
                "Warning",
                "Restarted",
                restart_message
                or f"an attempt failed; restarts: {wanted.restarts} (resuming from the last checkpoint)",
            )
        )
    return StatusChange(patch, events, status.phase, wanted.phase or "Pending", reason)


def observe(
    run: Mapping[str, Any],
    job: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    now: datetime,
    *,
    spec_suspend: bool,
    gang: bool = False,
) -> StatusChange:
    """The status change a Job and its pods imply for the run (no Job: nothing, e.g. deleted by its TTL).
    ``spec_suspend`` is the run's parsed ``spec.suspend``: a suspended Job is the user's doing, else Kueue's.
    ``gang``: the Job is one attempt of a multi-worker run, whose restarts the operator counts itself
    (``trainop.gang``) and whose start is that of its first attempt."""
    if job is None:
        return StatusChange()
    obs = job_to_conditions(job, pods, spec_suspend=spec_suspend)
    updates = list(obs.updates)
    finished = any(u[0] in (SUCCEEDED, FAILED) and u[1] == "True" for u in updates)
    status = TrainingRunStatus.parse(run.get("status"))
    if finished and get_condition(status.condition_list(), STALLED) is not None:
        updates.append((STALLED, "False", "NotRunning", "the run finished"))
    return compose(
        run,
        updates,
        now,
        jobName=(job.get("metadata") or {}).get("name"),
        restarts=None if gang else obs.restarts,
        startTime=(status.start_time or obs.start_time) if gang else obs.start_time,
        completionTime=obs.completion_time,
    )


def apply_decision(run: Mapping[str, Any], decision: Decision, now: datetime) -> StatusChange:
    """The status a gang decision writes: a restart moves ``attempt`` on (and counts it) with the worker that
    caused it as Running's reason and the Restarted Event; a failure ends the run as a Job failure would."""
    if decision.action not in ("Fail", "Restart"):
        return StatusChange()
    gang = decision.gang
    counters: dict[str, Any] = {"attempt": gang.attempt, "restarts": gang.restarts, "failures": gang.failures}
    reason, message = decision.reason, decision.message
    if decision.action == "Restart":
        update = (RUNNING, "False", reason, message)
        return compose(run, [update], now, restart_message=message, **counters)
    updates: list[Update] = [
        (FAILED, "True", reason, message),
        (SUCCEEDED, "False", reason, message),
        (RUNNING, "False", reason, message),
        (SUSPENDED, "False", reason, message),
    ]
    conditions = TrainingRunStatus.parse(run.get("status")).condition_list()
    if get_condition(conditions, STALLED) is not None:
        updates.append((STALLED, "False", "NotRunning", "the run finished"))
    return compose(run, updates, now, completionTime=decision.completion_time, **counters)


def _without_nulls(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    return value


def _replacing(old: Any, new: Any) -> Any:
    """A merge patch that turns ``old`` into ``new`` (a merge patch merges maps: keys only in ``old`` get null)."""
    if not isinstance(old, Mapping) or not isinstance(new, Mapping):
        return new
    patch = {k: None for k in old if k not in new}
    patch.update({k: _replacing(old.get(k), v) for k, v in new.items()})
    return patch


def resolved_change(run: Mapping[str, Any], resolved: ResolvedSpec) -> StatusChange:
    """``status.resolved`` replaced by ``resolved`` (``trainop.profiles.describe``); no write when equal."""
    current = (run.get("status") or {}).get("resolved")
    wanted = _without_nulls(resolved.dump())
    if _without_nulls(current) == wanted:
        return StatusChange()
    return StatusChange({"resolved": _replacing(current, wanted)})
