"""kopf handlers of TrainingSweeps: thin adapters from events to the pure ``trainop.sweep``.

What moves a sweep on: its creation, and on an operator's start ``resume`` (finishing whatever a killed operator
left: a recorded trial without its run); a change of its spec (parallelism, maxTrials, a fixed invalid spec); and
every change of a child TrainingRun's phase, objective or best checkpoint (``trial_event``). No timer or daemon:
kopf's timers need its finalizer, and ``kubectl delete tsw`` would then wait for a running operator.

Each reconcile GETs the sweep and LISTs its runs afresh, decides (``sweep.decide``), merge-patches the status with
the sweep's ``resourceVersion`` (a concurrent writer makes it a 409 and the round starts over), and only then
creates the runs of the recorded trials that have none (first, without S3, the one claim they share:
``ensure_claim``, also used by ``schedule_handlers``). One reconcile per sweep at a time (``Serial``), in the
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
from typing import Any, cast

import kopf
from kubernetes.client.exceptions import ApiException

from trainer.api.manifest import SpecError
from trainer.api.spec import API_GROUP, API_VERSION, PLURAL
from trainer.api.status import TrainingRunStatus
from trainer.api.sweep import SWEEP_PLURAL

from . import checkpoint_store
from . import sweep as sw
from .kube import MERGE_PATCH, TIMEOUT, Kube, _json, _or_none, to_kopf_error
from .names import claim_name
from .runtime import Runtime, Serial, runtime
from .settings import Settings
from .status import Event
from .status_writer import utcnow

TSW = (API_GROUP, API_VERSION, SWEEP_PLURAL)
TR = (API_GROUP, API_VERSION, PLURAL)
MEMO_KEY = "trainop.sweeps"
CONFLICT_ROUNDS = 5

log = logging.getLogger(__name__)
Json = dict[str, Any]


class SweepApi:
    """The custom-object calls of sweeps and their runs (the answers as the API server's JSON, as ``Kube``). The
    owner's ``plural`` and the label of its runs are class attributes: ``schedule_handlers.ScheduleApi`` makes the
    same calls for TrainingSchedules."""

    plural = SWEEP_PLURAL
    label = sw.SWEEP_LABEL

    def __init__(self, kube: Kube) -> None:
        self.custom = kube.custom
        self.opts: dict[str, Any] = {"_preload_content": False, "_request_timeout": TIMEOUT}

    def read_owner(self, namespace: str, name: str) -> Json | None:
        return _or_none(
            lambda: self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, self.plural, name, **self.opts
            )
        )

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any], version: str) -> bool:
        """Merge-patch the status if the owner is still at ``version``; False when it changed (409) or is gone."""
        body = {"metadata": {"resourceVersion": version}, "status": dict(status)}
        try:
            return (
                _or_none(
                    lambda: self.custom.patch_namespaced_custom_object_status(
                        API_GROUP,
                        API_VERSION,
                        namespace,
                        self.plural,
                        name,
                        body,
                        _content_type=MERGE_PATCH,
                        **self.opts,
                    )
                )
                is not None
            )
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    def list_runs(self, namespace: str, owner: str) -> list[Json]:
        answer = _json(
            self.custom.list_namespaced_custom_object(
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
                label_selector=f"{self.label}={owner}",
                **self.opts,
            )
        )
        return list(answer.get("items") or [])

    def create_run(self, body: Mapping[str, Any]) -> tuple[Json, bool]:
        """Create, or return the existing run of that name (409); ``(object, created)``."""
        meta = body["metadata"]
        try:
            created = self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, meta["namespace"], PLURAL, dict(body), **self.opts
            )
            return _json(created), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = _or_none(
            lambda: self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, meta["namespace"], PLURAL, meta["name"], **self.opts
            )
        )
        if existing is None:  # deleted between the 409 and the GET
            raise kopf.TemporaryError(f"TrainingRun {meta['name']} is being deleted", delay=2)
        return existing, False

    def delete_run(self, namespace: str, name: str, uid: str) -> bool:
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
        try:
            return (
                _or_none(
                    lambda: self.custom.delete_namespaced_custom_object(
                        API_GROUP, API_VERSION, namespace, PLURAL, name, body=body, **self.opts
                    )
                )
                is not None
            )
        except ApiException as exc:
            if exc.status == 409:  # the name is another run's now
                return False
            raise


@dataclass
class Sweeps:
    """This process's sweep bookkeeping (in kopf's memo): one reconcile per sweep at a time, the parsed plans
    by (uid, generation), and what each child last looked like (to skip its progress-only changes)."""

    serial: Serial = field(default_factory=Serial)
    plans: dict[tuple[str, Any], sw.Plan | SpecError] = field(default_factory=dict)
    seen: dict[tuple[str, str], tuple[Any, ...]] = field(default_factory=dict)

    def plan(self, body: Mapping[str, Any], settings: Settings) -> sw.Plan | SpecError:
        meta = body.get("metadata") or {}
        key = (str(meta.get("uid")), meta.get("generation"))
        if key not in self.plans:
            if len(self.plans) > 256:
                self.plans.clear()
            try:
                mode = settings.checkpoint_volume_access_mode
                self.plans[key] = sw.Plan.of(body, settings.checkpoint_prefix, mode)
            except SpecError as err:
                self.plans[key] = err
        return self.plans[key]


def _sweeps(memo: kopf.Memo) -> Sweeps:
    found = memo.get(MEMO_KEY)
    if not isinstance(found, Sweeps):
        raise kopf.TemporaryError("the operator has not finished starting", delay=1)
    return found


def _owned(obj: Mapping[str, Any], uid: str) -> bool:
    return any(r.get("uid") == uid for r in (obj.get("metadata") or {}).get("ownerReferences") or [])


# --- the claim a sweep's or a schedule's runs share -----------------------------------------------------------


def ensure_claim(rt: Runtime, body: Mapping[str, Any], claim: str | None, label: str) -> None:
    """Create the checkpoint claim of a sweep's or schedule's runs (``checkpoint_store.shared_base``; None: they
    have another store) before its runs, whose pods mount it (409: the existing one, judged by
    ``unusable_claim``); a new one gets a Normal Event on the owner naming it."""
    if claim is None:
        return
    owner = kopf.Body(cast(kopf.RawBody, body))
    wanted = checkpoint_store.build_shared_claim(owner, label, rt.settings)
    current, created = rt.kube.create(wanted)
    if waiting := checkpoint_store.unusable_claim(current, str(owner.metadata.uid), str(body.get("kind"))):
        raise kopf.TemporaryError(waiting, delay=5)
    if created:
        message = checkpoint_store.describe_claim(wanted, f"pvc://{claim}")
        log.info("%s %s/%s: %s", body.get("kind"), owner.metadata.namespace, owner.metadata.name, message)
        rt.writer.post(body, Event("Normal", "CheckpointVolume", message))


def delete_claim(rt: Runtime, namespace: str, name: str, uid: str) -> bool:
    """The shared claim of a deleted sweep or schedule, if it owns one (where no garbage collector deletes it)."""
    claim = claim_name(name)
    current = rt.kube.read("PersistentVolumeClaim", namespace, claim)
    return (
        current is not None
        and _owned(current, uid)
        and rt.kube.delete("PersistentVolumeClaim", namespace, claim)
    )


# --- in the pool: one reconcile -------------------------------------------------------------------------------


def reconcile(rt: Runtime, sweeps: Sweeps, namespace: str, name: str) -> str | None:
    """One round for a sweep; returns the InvalidSpec message when the sweep is invalid, else None."""
    api = SweepApi(rt.kube)
    try:
        for _ in range(CONFLICT_ROUNDS):
            body = api.read_owner(namespace, name)
            if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
                return None
            meta = body["metadata"]
            plan = sweeps.plan(body, rt.settings)
            if isinstance(plan, SpecError):
                decision = sw.invalid(body, plan, utcnow())
            else:
                runs = [r for r in api.list_runs(namespace, name) if _owned(r, str(meta.get("uid")))]
                decision = sw.decide(plan, body, {r["metadata"]["name"]: r for r in runs}, utcnow())
            if not decision.status or api.patch_status(
                namespace, name, decision.status, meta["resourceVersion"]
            ):
                break
        else:
            raise kopf.TemporaryError(
                f"TrainingSweep {namespace}/{name} kept changing under the operator", delay=2
            )
        if not isinstance(plan, SpecError):
            names = [p.path for p in plan.spec.parameters]
            owner = kopf.Body(cast(kopf.RawBody, body))
            if decision.create:
                ensure_claim(rt, body, plan.claim, sw.SWEEP_LABEL)
            for trial in decision.create:  # recorded above, so a restart from here creates it, never another
                child = sw.child_run(plan, trial)
                kopf.adopt(child, owner=owner)
                run, created = api.create_run(child)
                if not _owned(run, str(meta.get("uid"))):
                    raise kopf.TemporaryError(
                        f"TrainingRun {trial.name} belongs to another owner; waiting for its deletion",
                        delay=5,
                    )
                if created:
                    rt.writer.post(body, sw.trial_created(trial, names))
    except (kopf.TemporaryError, kopf.PermanentError):
        raise
    except Exception as exc:
        raise to_kopf_error(exc, f"reconciling TrainingSweep {namespace}/{name}") from None
    for event in decision.events:
        rt.writer.post(body, event)
    return "; ".join(plan.problems) if isinstance(plan, SpecError) else None


def delete_runs(rt: Runtime, namespace: str, name: str, uid: str) -> list[str]:
    """The runs (and the shared checkpoint claim) a deleted sweep still owns (where no garbage collector
    deletes them)."""
    api = SweepApi(rt.kube)
    gone = []
    for run in api.list_runs(namespace, name):
        meta = run["metadata"]
        if (
            _owned(run, uid)
            and not meta.get("deletionTimestamp")
            and api.delete_run(namespace, meta["name"], meta["uid"])
        ):
            gone.append(str(meta["name"]))
    if delete_claim(rt, namespace, name, uid):
        gone.append(f"PersistentVolumeClaim {claim_name(name)}")
    return gone


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
    try:
        gone = await rt.offload(delete_runs, rt, str(namespace), str(name), str(body.metadata.uid))
    except Exception as exc:
        log.warning("trial runs of TrainingSweep %s/%s not deleted: %s", namespace, name, exc)
        return
    if gone:
        log.info("deleted %s of TrainingSweep %s/%s", ", ".join(gone), namespace, name)


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
