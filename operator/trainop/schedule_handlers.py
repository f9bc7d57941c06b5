"""kopf handlers of TrainingSchedules: thin adapters from events and the clock to the pure ``trainop.schedule``.

What moves a schedule on: its creation, and on an operator's start ``resume`` (catching up on the ticks missed
while it was down, by CronJob's rules); a change of its spec (suspend, a fixed invalid spec); a change of one of
its runs (a phase, a promotion outcome: Forbid's next run, the history limits, the current model); and the clock.
The clock is one background task, not a kopf timer per schedule: kopf puts a finalizer on every object with a
timer, and ``kubectl delete tsc`` would then wait for a running operator. Every ``TRAINOP_TIMER_INTERVAL_SECONDS``
it reconciles the schedules (from the ``schedule_keys`` index) whose next tick has come, so a tick runs at most
an interval late. The time is ``clock.now()`` (the integration tests accelerate it, in the test process only).

Each reconcile GETs the schedule and LISTs the runs it owns afresh, decides (``schedule.decide``), deletes the
runs a Replace replaces, creates the claim its runs share where neither S3 nor the template names a store
(``checkpoint_store.shared_base``; 409: it exists), creates the tick's run (named from the tick: after a restart
the create meets a 409 and is done), merge-patches the status with the schedule's ``resourceVersion`` (a
concurrent writer makes it a 409 and the round starts over), and then prunes the history and posts the Events.
One reconcile per schedule at a time (``Serial``), in the runtime's thread pool.

Errors: an invalid schedule is Ready False/InvalidSpec and its create/update handler ends with
``kopf.PermanentError``; API failures are ``kopf.TemporaryError`` (retried by kopf for the create/resume/update
handlers; for the clock and run events, the next interval or change redoes the round). No finalizer: the runs
carry owner references, so the garbage collector deletes them with the schedule; where none runs, the schedule's
DELETED event deletes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import kopf

from trainer.api.manifest import SpecError
from trainer.api.schedule import SCHEDULE_PLURAL, TrainingScheduleStatus
from trainer.api.spec import API_GROUP, API_VERSION, PLURAL

from . import clock, prometheus
from . import schedule as sc
from .owners import Json, OwnerApi, cached_plan, converge, delete_left, ensure_claim, kopf_errors
from .runtime import MEMO_KEY as RUNTIME_KEY
from .runtime import Runtime, Serial, runtime
from .settings import Settings
from .status import Event

TSC = (API_GROUP, API_VERSION, SCHEDULE_PLURAL)
TR = (API_GROUP, API_VERSION, PLURAL)
MEMO_KEY = "trainop.schedules"
MAX_POSTED = 4096

log = logging.getLogger(__name__)
Key = tuple[str, str]


class ScheduleApi(OwnerApi):
    """The calls of ``OwnerApi`` for TrainingSchedules and the runs labelled with their name."""

    plural = SCHEDULE_PLURAL
    label = sc.SCHEDULE_LABEL


@dataclass
class Schedules:
    """This process's schedule bookkeeping (in kopf's memo): one reconcile per schedule at a time, the parsed plans
    by (uid, generation), when each schedule wants its next round (None: only on a change), the repeating Events
    already posted, and what each run last looked like (to skip the trainer's progress patches)."""

    serial: Serial = field(default_factory=Serial)
    plans: dict[tuple[str, Any], sc.Plan | SpecError] = field(default_factory=dict)
    wake: dict[Key, datetime | None] = field(default_factory=dict)
    posted: set[str] = field(default_factory=set)
    seen: dict[Key, tuple[Any, ...]] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None

    def plan(self, body: Mapping[str, Any], settings: Settings) -> sc.Plan | SpecError:
        return cached_plan(self.plans, body, settings, sc.Plan.of)

    def first_time(self, key: str) -> bool:
        if len(self.posted) > MAX_POSTED:
            self.posted.clear()
        new = key not in self.posted
        self.posted.add(key)
        return new


def _schedules(memo: kopf.Memo) -> Schedules:
    found = memo.get(MEMO_KEY)
    if not isinstance(found, Schedules):
        raise kopf.TemporaryError("the operator has not finished starting", delay=1)
    return found


# --- in the pool: one reconcile -------------------------------------------------------------------------------


def _act(
    rt: Runtime, api: ScheduleApi, body: Mapping[str, Any], plan: sc.Plan, decision: sc.Decision
) -> None:
    """Replace's deletions, then the claim the runs share (if the operator makes one) and the tick's run
    (before the status records the tick)."""
    meta = body["metadata"]
    for old in decision.replace:
        api.delete_run(meta["namespace"], old.name, old.uid)
    if decision.create is None:
        return
    ensure_claim(rt, body, plan.claim, sc.SCHEDULE_LABEL)
    if api.adopt_and_create(body, decision.create):
        prometheus.count_schedule_run(meta["namespace"], meta["name"])
        if decision.created is not None:
            rt.writer.post(body, decision.created)


def _decide(
    rt: Runtime, schedules: Schedules, api: ScheduleApi, key: Key, body: Json
) -> tuple[Mapping[str, Any], tuple[sc.Plan | SpecError, sc.Decision]]:
    """One round's decision from the schedule as read and its runs as listed, acted on up to the status
    (``owners.converge``'s ``decide``)."""
    now = clock.now()
    plan = schedules.plan(body, rt.settings)
    if isinstance(plan, SpecError):
        decision = sc.invalid(body, plan, now)
    else:
        owned = api.owned_runs(*key, str(body["metadata"].get("uid")))
        decision = sc.decide(plan, body, [sc.OwnedRun.of(r) for r in owned], now)
        _act(rt, api, body, plan, decision)
    return decision.status, (plan, decision)


def reconcile(rt: Runtime, schedules: Schedules, namespace: str, name: str) -> str | None:
    """One round for a schedule; returns the InvalidSpec message when the schedule is invalid, else None."""
    api, key = ScheduleApi(rt.kube), (namespace, name)
    with kopf_errors(f"reconciling TrainingSchedule {namespace}/{name}"):
        done = converge(
            api, "TrainingSchedule", namespace, name, lambda b: _decide(rt, schedules, api, key, b)
        )
        if done is None:
            schedules.wake.pop(key, None)
            return None
        body, (plan, decision) = done
        for old in decision.prune:
            if api.delete_run(namespace, old.name, old.uid):
                log.info("TrainingSchedule %s/%s: deleted %s (history limit)", namespace, name, old.name)
    schedules.wake[key] = decision.wake
    status = TrainingScheduleStatus.parse({**(body.get("status") or {}), **decision.status})
    prometheus.observe_schedule(
        namespace, name, status.current_model.dump() if status.current_model else None
    )
    events: list[Event] = [*decision.events]
    events += [e for k, e in decision.once.items() if schedules.first_time(k)]
    for event in events:
        rt.writer.post(body, event)
    return "; ".join(plan.problems) if isinstance(plan, SpecError) else None


# --- the clock ------------------------------------------------------------------------------------------------


async def _reconcile(memo: kopf.Memo, namespace: str, name: str) -> str | None:
    rt, schedules = runtime(memo), _schedules(memo)
    return await rt.offload(
        schedules.serial.run, (namespace, name), lambda: reconcile(rt, schedules, namespace, name)
    )


async def _quietly(memo: kopf.Memo, key: Key, why: str) -> bool:
    """A reconcile whose failure is logged (the next interval or change redoes it); False when it failed."""
    try:
        await _reconcile(memo, *key)
    except Exception as exc:
        log.warning("TrainingSchedule %s/%s not reconciled (%s): %s", *key, why, exc)
        return False
    return True


async def tick_forever(memo: kopf.Memo, keys: kopf.Index[Key, Any]) -> None:
    """Every interval: the schedules whose next tick has come (or that this process has not seen yet)."""
    schedules = _schedules(memo)
    while True:
        rt = memo.get(RUNTIME_KEY)
        await asyncio.sleep(rt.settings.timer_interval_seconds if isinstance(rt, Runtime) else 1.0)
        if not isinstance(rt, Runtime):
            continue
        now = clock.now()
        due = [
            k for k in list(keys) if k in schedules.wake and (w := schedules.wake[k]) is not None and w <= now
        ]
        due += [k for k in list(keys) if k not in schedules.wake]
        await asyncio.gather(*(_quietly(memo, k, "clock") for k in due))


# --- handlers -------------------------------------------------------------------------------------------------


@kopf.index(*TSC)
def schedule_keys(namespace: str | None, name: str | None, **_: Any) -> dict[Any, Any]:
    return {(str(namespace), str(name)): True}


@kopf.on.startup()
async def schedule_startup(memo: kopf.Memo, **kwargs: Any) -> None:
    schedules = Schedules()
    memo[MEMO_KEY] = schedules
    keys = cast("kopf.Index[Key, Any]", kwargs["schedule_keys"])
    schedules.task = asyncio.create_task(tick_forever(memo, keys), name="schedule clock")


@kopf.on.cleanup()
async def schedule_cleanup(memo: kopf.Memo, **_: Any) -> None:
    schedules = memo.get(MEMO_KEY)
    if isinstance(schedules, Schedules) and schedules.task is not None:
        schedules.task.cancel()
        await asyncio.gather(schedules.task, return_exceptions=True)


@kopf.on.resume(*TSC)
@kopf.on.create(*TSC)
@kopf.on.update(*TSC, field="spec")
async def schedule_changed(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    problem = await _reconcile(memo, str(namespace), str(name))
    if problem:
        raise kopf.PermanentError(f"invalid TrainingSchedule: {problem}")


@kopf.on.event(*TSC)
async def schedule_event(
    type: str | None, name: str | None, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    if type != "DELETED":
        return
    rt, key = runtime(memo), (str(namespace), str(name))
    _schedules(memo).wake.pop(key, None)
    prometheus.forget_schedule(*key)
    await delete_left(rt, ScheduleApi(rt.kube), "TrainingSchedule", *key, str(body.metadata.uid))


def _looks(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a run matters to its schedule: not the progress the trainer patches every epoch."""
    run = sc.OwnedRun.of(body)
    return (run.phase, run.completed, run.promotion, run.deleting)


@kopf.on.event(*TR, labels={sc.SCHEDULE_LABEL: kopf.PRESENT})
async def scheduled_run_event(
    type: str | None,
    body: kopf.Body,
    name: str | None,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    schedules, key = _schedules(memo), (str(namespace), str(name))
    looks = ("DELETED",) if type == "DELETED" else _looks(body)
    if schedules.seen.get(key) == looks:
        return
    if not await _quietly(memo, (str(namespace), str(labels[sc.SCHEDULE_LABEL])), f"after {name} changed"):
        return
    if type == "DELETED":
        schedules.seen.pop(key, None)
    else:
        schedules.seen[key] = looks
