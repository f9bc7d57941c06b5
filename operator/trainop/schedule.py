"""TrainingSchedule decisions (pure): which tick to run now, what to do with the active runs, which finished runs
to prune, what the status and Events say, and when to look again.

Why pure, and why each function takes ``now``: the rules are CronJob's, and they are only testable as a table of
(spec, status, runs, now) -> decision rows, DST and restarts included. The handler reads the clock
(``trainop.clock``) and the API, and does what this module decides.

CronJob's rules, as in the Kubernetes CronJob controller:

* the tick to run is the most recent one in ``(lastScheduleTime or creationTimestamp, now]``; the older missed
  ones are not run. With ``startingDeadlineSeconds`` the window starts no earlier than ``now - deadline``, so a
  tick older than the deadline is skipped (a ``MissSchedule`` Warning). More than 100 missed ticks in the window
  is a ``TooManyMissedTimes`` Warning; the latest still runs.
* Forbid: while a run is active, the tick is not run and ``lastScheduleTime`` stays, so once the run finishes the
  most recent tick (within the deadline) runs; Replace: the active runs are deleted, then the new one created;
  Allow: runs overlap. A suspended schedule creates nothing; its ticks count as missed when it is resumed.
* history: the oldest finished runs beyond ``successfulRunsHistoryLimit`` / ``failedRunsHistoryLimit`` go.

Restarts: a tick's run is named from the tick alone (``<schedule>-<minutes since the epoch>``, as CronJob names
its Jobs), created *before* ``lastScheduleTime`` records it; a second create of the same tick meets a 409, and
``lastScheduleTime`` is never earlier than the newest run the schedule owns. So no tick gets two runs.

Wall times: ticks are computed by croniter in ``spec.timeZone``. In spring, a time inside the skipped hour fires
once, at the end of the gap (02:30 -> 03:00); in autumn, a wall time that occurs twice is two ticks, an hour apart
(as with CronJob). ``data.end`` of a tick's run is the tick's date in the time zone.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

from croniter import croniter

from trainer.api.manifest import SpecError
from trainer.api.schedule import (
    TrainingScheduleSpec,
    TrainingScheduleStatus,
    parse_schedule,
    zone,
)
from trainer.api.spec import API_GROUP, API_VERSION, KIND
from trainer.api.status import PromotionStatus, TrainingRunStatus, rfc3339

from . import checkpoint_store
from .conditions import parse_time, set_condition
from .names import bounded
from .runs import MAX_LABEL
from .schedule_promotion import current_model, promotion_event
from .status import Event

SCHEDULE_LABEL = f"{API_GROUP}/schedule"
SCHEDULED_AT = f"{API_GROUP}/scheduled-at"
MAX_MISSED = 100
FINISHED = ("Succeeded", "Failed")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# --- ticks -----------------------------------------------------------------------------------------------------


def ticks(cron: str, tz: ZoneInfo, after: datetime, until: datetime, limit: int) -> list[datetime]:
    """The ticks in ``(after, until]`` (UTC), at most ``limit`` of them, oldest first."""
    it = croniter(cron, after.astimezone(tz))
    out: list[datetime] = []
    while len(out) < limit:
        t = it.get_next(datetime).astimezone(timezone.utc)
        if t > until:
            break
        out.append(t)
    return out


def next_tick(cron: str, tz: ZoneInfo, after: datetime) -> datetime:
    """The first tick after ``after``."""
    t: datetime = croniter(cron, after.astimezone(tz)).get_next(datetime)
    return t.astimezone(timezone.utc)


def latest_tick(cron: str, tz: ZoneInfo, now: datetime) -> datetime:
    """The last tick at or before ``now`` (ticks fall on whole minutes)."""
    since = now.replace(microsecond=0) + timedelta(seconds=1)
    t: datetime = croniter(cron, since.astimezone(tz)).get_prev(datetime)
    return t.astimezone(timezone.utc)


@dataclass(frozen=True)
class Due:
    """What the clock says: the tick to run (None: none), how many were missed in the window (capped at
    ``MAX_MISSED + 1``), and the newest tick skipped for being older than the deadline."""

    tick: datetime | None
    missed: int = 0
    late: datetime | None = None


def due(spec: TrainingScheduleSpec, last: datetime, now: datetime) -> Due:
    """The tick to run at ``now``, given the last scheduled one (or the creation time)."""
    tz = zone(spec.time_zone)
    window = last
    if spec.starting_deadline_seconds is not None:
        window = max(last, now - timedelta(seconds=spec.starting_deadline_seconds))
    found = ticks(spec.schedule, tz, window, now, MAX_MISSED + 1)
    if found:
        tick = found[-1] if len(found) <= MAX_MISSED else latest_tick(spec.schedule, tz, now)
        return Due(tick, len(found))
    late = ticks(spec.schedule, tz, last, window, MAX_MISSED + 1) if window > last else []
    return Due(None, 0, (latest_tick(spec.schedule, tz, window) if late else None))


# --- runs ------------------------------------------------------------------------------------------------------


def run_name(schedule: str, tick: datetime) -> str:
    """``<schedule>-<minutes since the epoch>`` (CronJob's Job names), shortened with a hash of the schedule's
    name when longer than a label (63): a function of the schedule's name and the tick alone."""
    minutes = int((tick - EPOCH).total_seconds()) // 60
    return bounded(schedule, f"-{minutes}", MAX_LABEL)


@dataclass(frozen=True)
class OwnedRun:
    """What of a TrainingRun the schedule owns matters to it."""

    name: str
    uid: str
    phase: str | None
    scheduled: datetime | None
    completed: datetime | None
    promotion: PromotionStatus | None = None
    deleting: bool = False

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> OwnedRun:
        meta = body.get("metadata") or {}
        status = TrainingRunStatus.parse(body.get("status"))
        return cls(
            name=str(meta.get("name")),
            uid=str(meta.get("uid") or ""),
            phase=status.phase,
            scheduled=parse_time((meta.get("annotations") or {}).get(SCHEDULED_AT)),
            completed=parse_time(status.completion_time),
            promotion=status.promotion,
            deleting=bool(meta.get("deletionTimestamp")),
        )

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED

    def order(self) -> tuple[datetime, str]:
        return (self.scheduled or EPOCH, self.name)


@dataclass(frozen=True)
class Plan:
    """A valid schedule: its spec, raw template spec, the checkpoint base its runs share, and the claim the
    operator creates for them (None: on S3 or a claim the template names)."""

    name: str
    namespace: str
    spec: TrainingScheduleSpec
    template: dict[str, Any]
    base: str
    tz: ZoneInfo
    claim: str | None = None

    @classmethod
    def of(
        cls, body: Mapping[str, Any], checkpoint_prefix: str | None, access_mode: str = "ReadWriteOnce"
    ) -> Plan:
        """Parse and validate a schedule; raises SpecError naming every problem. The base is the template's
        checkpoint.uri, else ``<TRAINOP_CHECKPOINT_PREFIX>/<namespace>/<schedule>``, else the schedule's own
        claim ``pvc://<schedule>-checkpoints`` (``checkpoint_store.shared_base``), refused where runs of
        ``access_mode`` would share it across nodes (concurrencyPolicy Allow, several pods per run)."""
        meta = body.get("metadata") or {}
        name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
        spec, template = parse_schedule(body.get("spec"), name)
        uri = spec.template.spec.checkpoint.uri
        shared = checkpoint_store.shared_base(name, uri, checkpoint_prefix)
        claim = checkpoint_store.claim_of(shared)
        if claim is not None:
            overlap = (
                checkpoint_store.overlap(
                    body.get("spec"),
                    "concurrencyPolicy",
                    "Allow{default} lets runs overlap, and their pods",
                    "Forbid or Replace",
                )
                if spec.concurrency_policy == "Allow"
                else None
            )
            problems = checkpoint_store.shared_problems(
                claim, access_mode, "spec.template.spec", spec.template.spec, overlap
            )
            if problems:
                raise SpecError(f"TrainingSchedule {name}", problems)
        base = (uri or shared or f"{checkpoint_prefix}/{namespace}/{name}").rstrip("/")
        return cls(name, namespace, spec, template, base, zone(spec.time_zone), claim)


def child_run(plan: Plan, tick: datetime) -> dict[str, Any]:
    """The TrainingRun of one tick (the handler adopts it: owner reference and namespace)."""
    name = run_name(plan.name, tick)
    spec = copy.deepcopy(plan.template)
    spec.setdefault("data", {})["end"] = tick.astimezone(plan.tz).date().isoformat()
    spec.setdefault("checkpoint", {})["uri"] = f"{plan.base}/{name}"
    chosen = plan.spec.promotion or plan.spec.template.spec.promotion
    if chosen is not None:
        promotion = chosen.model_dump(by_alias=True, exclude_none=True, mode="json")
        promotion["uri"] = promotion.get("uri") or plan.base
        spec["promotion"] = promotion
    meta = plan.spec.template.metadata
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "labels": {**meta.labels, SCHEDULE_LABEL: plan.name},
            "annotations": {**meta.annotations, SCHEDULED_AT: rfc3339(tick)},
        },
        "spec": spec,
    }


def prune(runs: Sequence[OwnedRun], succeeded: int, failed: int) -> list[OwnedRun]:
    """The finished runs beyond the history limits, oldest (by scheduled time) first."""
    out: list[OwnedRun] = []
    for phase, keep in (("Succeeded", succeeded), ("Failed", failed)):
        done = sorted((r for r in runs if r.phase == phase and not r.deleting), key=OwnedRun.order)
        out += done[: max(len(done) - keep, 0)]
    return sorted(out, key=OwnedRun.order)


# --- the decision ----------------------------------------------------------------------------------------------


@dataclass
class Decision:
    """In order: delete ``replace`` (Replace), create ``create`` (posting ``created`` only if it was not there
    yet), merge-patch ``status``, delete ``prune``, post ``events``; ``once`` are Events to post once per process
    (key -> Event: they repeat every round until the next tick). ``wake``: when to look again (None: on a change)."""

    create: dict[str, Any] | None = None
    created: Event | None = None
    replace: list[OwnedRun] = field(default_factory=list)
    prune: list[OwnedRun] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    once: dict[str, Event] = field(default_factory=dict)
    wake: datetime | None = None


def _when(t: datetime, tz: ZoneInfo) -> str:
    local = t.astimezone(tz)
    return rfc3339(t) if tz.key == "UTC" else f"{rfc3339(t)} ({local:%Y-%m-%d %H:%M %Z})"


def _tick(
    plan: Plan, meta: Mapping[str, Any], runs: Sequence[OwnedRun], last: datetime, now: datetime
) -> Decision:
    """What the clock and the concurrency policy make of ``now``: a run to create, runs to replace, Warnings."""
    spec, out = plan.spec, Decision()
    d = due(spec, last, now)
    uid = str(meta.get("uid") or "")
    if d.late is not None:
        out.once[f"{uid}/late/{rfc3339(d.late)}"] = Event(
            "Warning",
            "MissSchedule",
            f"missed the tick of {_when(d.late, plan.tz)} by more than startingDeadlineSeconds "
            f"({spec.starting_deadline_seconds}); not run",
        )
    if d.tick is None:
        return out
    if d.missed > MAX_MISSED:
        out.once[f"{uid}/many/{rfc3339(d.tick)}"] = Event(
            "Warning",
            "TooManyMissedTimes",
            f"more than {MAX_MISSED} ticks missed; running only the latest ({_when(d.tick, plan.tz)}). Set or "
            "decrease startingDeadlineSeconds or check the operator's clock",
        )
    name = run_name(plan.name, d.tick)
    active = [r for r in runs if not r.finished and not r.deleting]
    if any(r.name == name for r in runs):
        return out  # created before a restart; the status records it
    if spec.concurrency_policy == "Forbid" and active:
        out.once[f"{uid}/forbid/{rfc3339(d.tick)}"] = Event(
            "Normal",
            "RunAlreadyActive",
            f"not starting the run of {_when(d.tick, plan.tz)}: {', '.join(r.name for r in active)} still "
            "active and concurrencyPolicy is Forbid",
        )
        return out
    if spec.concurrency_policy == "Replace":
        out.replace = active
        out.events += [Event("Normal", "SuccessfulDelete", f"deleted {r.name} (Replace)") for r in active]
    out.create = child_run(plan, d.tick)
    out.created = Event(
        "Normal",
        "SuccessfulCreate",
        f"created {name} for {_when(d.tick, plan.tz)} (data.end {out.create['spec']['data']['end']})",
    )
    return out


def decide(plan: Plan, schedule: Mapping[str, Any], runs: Sequence[OwnedRun], now: datetime) -> Decision:
    """The next step of a valid schedule from its stored status and the runs it owns."""
    meta, spec = schedule.get("metadata") or {}, plan.spec
    status = TrainingScheduleStatus.parse(schedule.get("status"))
    created = parse_time(meta.get("creationTimestamp")) or now
    newest = max((r.scheduled for r in runs if r.scheduled is not None), default=None)
    last = max(t for t in (parse_time(status.last_schedule_time), newest, created) if t is not None)
    out = Decision() if spec.suspend else _tick(plan, meta, runs, last, now)
    replaced = {r.name for r in out.replace}
    stay = [r for r in runs if r.name not in replaced]
    out.prune = prune(stay, spec.successful_runs_history_limit, spec.failed_runs_history_limit)
    reported = set(status.promotions_reported or ())
    fresh = sorted(
        (r for r in stay if r.finished and r.promotion is not None and r.name not in reported),
        key=OwnedRun.order,
    )
    out.events += [promotion_event(r) for r in fresh]
    out.wake = None if spec.suspend else next_tick(spec.schedule, plan.tz, now)
    fields = _fields(status, stay, out, newest, now)
    kept = {r.name for r in stay} - {r.name for r in out.prune}
    fields["promotionsReported"] = sorted((reported | {r.name for r in fresh}) & kept) or None
    if spec.suspend:
        ready = ("True", "Suspended", "suspended: no new runs until spec.suspend is false")
        suspended = ("True", "Suspended", "spec.suspend is true")
    else:
        ready = ("True", "Scheduled", f"next run at {_when(out.wake, plan.tz)}" if out.wake else "scheduled")
        suspended = ("False", "Active", "")
    out.status = _finish(schedule, status, fields, now, ready, suspended)
    return out


def _fields(
    status: TrainingScheduleStatus,
    stay: Sequence[OwnedRun],
    out: Decision,
    newest: datetime | None,
    now: datetime,
) -> dict[str, Any]:
    """The status fields after ``out`` is acted on: the tick, the active runs (the new one included), the last
    success, the current model."""
    tick = parse_time(out.create["metadata"]["annotations"][SCHEDULED_AT]) if out.create else None
    active = [r for r in stay if not r.finished and not r.deleting]
    refs = [{"name": r.name, "uid": r.uid, "scheduledTime": _stamp(r.scheduled)} for r in active]
    if out.create is not None:
        refs.append({"name": out.create["metadata"]["name"], "scheduledTime": _stamp(tick)})
    successes = [r.completed for r in stay if r.phase == "Succeeded" and r.completed is not None]
    lastsucc = max([*successes, *filter(None, [parse_time(status.last_successful_time)])], default=None)
    current = current_model(status.current_model, stay, now)
    recorded = (tick, parse_time(status.last_schedule_time), newest)
    return {
        "lastScheduleTime": _stamp(max((t for t in recorded if t is not None), default=None)),
        "nextScheduleTime": _stamp(out.wake),
        "lastSuccessfulTime": _stamp(lastsucc),
        "active": [{k: v for k, v in ref.items() if v is not None} for ref in refs] or None,
        "activeCount": len(refs),
        "currentModel": current.dump() if current is not None else None,
    }


def _stamp(t: datetime | None) -> str | None:
    return rfc3339(t) if t is not None else None


def invalid(schedule: Mapping[str, Any], err: SpecError, now: datetime) -> Decision:
    """Ready False/InvalidSpec, and one Warning Event per new message; nothing is created or deleted."""
    status = TrainingScheduleStatus.parse(schedule.get("status"))
    message = "; ".join(err.problems)
    ready = ("False", "InvalidSpec", message)
    old = next((c for c in status.conditions or () if c.type == "Ready"), None)
    out = Decision(status=_finish(schedule, status, {"nextScheduleTime": None}, now, ready, None))
    if old is None or old.reason != "InvalidSpec" or old.message != message:
        out.events.append(Event("Warning", "InvalidSpec", message))
    return out


def _finish(
    schedule: Mapping[str, Any],
    status: TrainingScheduleStatus,
    fields: dict[str, Any],
    now: datetime,
    ready: tuple[str, str, str],
    suspended: tuple[str, str, str] | None,
) -> dict[str, Any]:
    """The merge patch: ``fields`` and the conditions, only what differs from the stored status."""
    generation = (schedule.get("metadata") or {}).get("generation")
    conditions: list[dict[str, Any]] = [c.dump() for c in status.conditions or ()]
    conditions = set_condition(conditions, "Ready", *ready, now, generation)
    if suspended is not None:
        conditions = set_condition(conditions, "Suspended", *suspended, now, generation)
    wanted = {
        "conditions": conditions,
        **fields,
        **({"observedGeneration": generation} if generation is not None else {}),
    }
    current = status.dump()
    return {k: v for k, v in wanted.items() if current.get(k) != v and not (v is None and k not in current)}
