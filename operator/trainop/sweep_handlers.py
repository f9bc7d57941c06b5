"""kopf handlers of TrainingSweeps: thin adapters from events to the pure ``trainop.sweep``.

What moves a sweep on: its creation, and on an operator's start ``resume`` (finishing whatever a killed operator
left: a recorded trial without its run); a change of its spec (parallelism, maxTrials, a fixed invalid spec); and
every change of a child TrainingRun's phase, objective or best checkpoint (``trial_event``). No timer or daemon:
kopf's timers need its finalizer, and ``kubectl delete tsw`` would then wait for a running operator.

Each reconcile GETs the sweep and LISTs its runs afresh, decides (``sweep.decide``), merge-patches the status with
the sweep's ``resourceVersion`` (a concurrent writer makes it a 409 and the round starts over), and only then
creates the runs of the recorded trials that have none (first, without S3, the one claim they share:
``owners.ensure_claim``, also used by ``schedule_handlers``). One reconcile per sweep at a time (``Serial``), in the
runtime's thread pool; a burst of child events costs two rounds.

Errors: an invalid sweep is marked Failed/InvalidSpec and its create/update handler ends with
``kopf.PermanentError`` (retrying cannot fix it; fixing the spec is an update); API failures are
``kopf.TemporaryError`` (``kube.to_kopf_error``), retried by kopf for the create/resume/update handlers. Child
events are not retried: a failed reconcile is logged, and the child's next change (or the next start) redoes it.

No finalizer: the runs carry owner references (``kopf.adopt``), so the garbage collector deletes them with the
sweep; where none runs, the sweep's DELETED event deletes them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from trainer.api.manifest import SpecError
from trainer.api.spec import API_GROUP, API_VERSION, PLURAL
from trainer.api.status import TrainingRunStatus
from trainer.api.sweep import SWEEP_PLURAL

from . import sweep as sw
from .owners import Json, OwnerApi, cached_plan, converge, delete_left, ensure_claim, kopf_errors
from .runtime import Runtime, Serial, runtime
from .settings import Settings
from .status_writer import utcnow

TSW = (API_GROUP, API_VERSION, SWEEP_PLURAL)
TR = (API_GROUP, API_VERSION, PLURAL)
MEMO_KEY = "trainop.sweeps"

log = logging.getLogger(__name__)


class SweepApi(OwnerApi):
    """The calls of ``OwnerApi`` for TrainingSweeps and the runs labelled with their name."""

    plural = SWEEP_PLURAL
    label = sw.SWEEP_LABEL


@dataclass
class Sweeps:
    """This process's sweep bookkeeping (in kopf's memo): one reconcile per sweep at a time, the parsed plans
    by (uid, generation), and what each child last looked like (to skip its progress-only changes)."""

    serial: Serial = field(default_factory=Serial)
    plans: dict[tuple[str, Any], sw.Plan | SpecError] = field(default_factory=dict)
    seen: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)

    def plan(self, body: Mapping[str, Any], settings: Settings) -> sw.Plan | SpecError:
        return cached_plan(self.plans, body, settings, sw.Plan.of)


def _sweeps(memo: kopf.Memo) -> Sweeps:
    found = memo.get(MEMO_KEY)
    if not isinstance(found, Sweeps):
        raise kopf.TemporaryError("the operator has not finished starting", delay=1)
    return found


# --- in the pool: one reconcile -------------------------------------------------------------------------------


def _decide(
    rt: Runtime, sweeps: Sweeps, api: SweepApi, key: tuple[str, str], body: Json
) -> tuple[Mapping[str, Any], tuple[sw.Plan | SpecError, sw.SweepDecision]]:
    """One round's decision from the sweep as read and its runs as listed (``owners.converge``'s ``decide``)."""
    plan = sweeps.plan(body, rt.settings)
    if isinstance(plan, SpecError):
        decision = sw.invalid(body, plan, utcnow())
    else:
        runs = api.owned_runs(*key, str(body["metadata"].get("uid")))
        decision = sw.decide(plan, body, {r["metadata"]["name"]: r for r in runs}, utcnow())
    return decision.status, (plan, decision)


def _create_trials(rt: Runtime, api: SweepApi, body: Json, plan: sw.Plan, decision: sw.SweepDecision) -> None:
    """The runs of the trials the status now records (first the claim they share, if the operator makes one)."""
    names = [p.path for p in plan.spec.parameters]
    if decision.create:
        ensure_claim(rt, body, plan.claim, sw.SWEEP_LABEL)
    for trial in decision.create:  # recorded above, so a restart from here creates it, never another
        if api.adopt_and_create(body, sw.child_run(plan, trial)):
            rt.writer.post(body, sw.trial_created(trial, names))


def reconcile(rt: Runtime, sweeps: Sweeps, namespace: str, name: str) -> str | None:
    """One round for a sweep; returns the InvalidSpec message when the sweep is invalid, else None."""
    api = SweepApi(rt.kube)
    with kopf_errors(f"reconciling TrainingSweep {namespace}/{name}"):
        done = converge(
            api, "TrainingSweep", namespace, name, lambda b: _decide(rt, sweeps, api, (namespace, name), b)
        )
        if done is None:
            return None
        body, (plan, decision) = done
        if not isinstance(plan, SpecError):
            _create_trials(rt, api, body, plan, decision)
    for event in decision.events:
        rt.writer.post(body, event)
    return "; ".join(plan.problems) if isinstance(plan, SpecError) else None


# --- handlers -------------------------------------------------------------------------------------------------


@kopf.on.startup()
async def sweep_startup(memo: kopf.Memo, **_: Any) -> None:
    memo[MEMO_KEY] = Sweeps()


async def _reconcile(memo: kopf.Memo, namespace: str, name: str) -> str | None:
    rt, sweeps = runtime(memo), _sweeps(memo)
    return await rt.offload(
        sweeps.serial.run, (namespace, name), lambda: reconcile(rt, sweeps, namespace, name)
    )


@kopf.on.resume(*TSW)
@kopf.on.create(*TSW)
@kopf.on.update(*TSW, field="spec")
async def sweep_changed(namespace: str | None, name: str | None, memo: kopf.Memo, **_: Any) -> None:
    problem = await _reconcile(memo, str(namespace), str(name))
    if problem:
        raise kopf.PermanentError(f"invalid TrainingSweep: {problem}")


@kopf.on.event(*TSW)
async def sweep_event(
    type: str | None, name: str | None, namespace: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    if type != "DELETED":
        return
    rt = runtime(memo)
    uid = str(body.metadata.uid)
    await delete_left(rt, SweepApi(rt.kube), "TrainingSweep", str(namespace), str(name), uid, "trial runs")


def _looks(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a run matters to its sweep: not the progress the trainer patches every epoch."""
    status = TrainingRunStatus.parse(body.get("status"))
    return (
        status.phase,
        status.metrics.dump() if status.metrics else None,
        status.checkpoint and status.checkpoint.best,
    )


@kopf.on.event(*TR, labels={sw.SWEEP_LABEL: kopf.PRESENT})
async def trial_event(
    type: str | None,
    body: kopf.Body,
    name: str | None,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    **_: Any,
) -> None:
    sweeps, key = _sweeps(memo), (str(namespace), str(name))
    looks = ("DELETED",) if type == "DELETED" else _looks(body)
    if sweeps.seen.get(key) == looks:
        return
    try:
        await _reconcile(memo, str(namespace), str(labels[sw.SWEEP_LABEL]))
    except Exception as exc:
        log.warning(
            "TrainingSweep %s/%s not reconciled after %s changed: %s",
            namespace,
            labels[sw.SWEEP_LABEL],
            name,
            exc,
        )
        return
    if type == "DELETED":
        sweeps.seen.pop(key, None)
    else:
        sweeps.seen[key] = looks
