"""The run's children (ServiceAccount/Role/RoleBinding, Service, Job, pods): create them, find them, observe
them, and restart a multi-worker run's gang.

Why a module of its own: the kopf handlers in ``handlers`` stay thin adapters from events to calls, and the
child-resource logic they share lives here: look before create (an existing Job is adopted, never
duplicated or re-judged), validation failures turned into Failed/InvalidSpec, and refreshing the run's status
from its children.

A multi-worker run is driven one step at a time by ``reconcile_gang``: each round reads the run, its Job and its
pods afresh from the API and does the one step ``trainop.gang.decide`` names (write the restart, delete the
old Job and its pods, create the next Job), so that killing the operator between two steps loses none and
repeats none. Rounds of one run never overlap (``Runtime.gangs``). A walk-forward run's status comes from its
folds (``trainop.folds_observe``): ``observer`` picks the function that computes a run's status.

Two kinds of functions: ``children``/``run_of`` read kopf's indexes and must be called on the event loop (the
only thread that changes them, so a copy taken there is consistent); the others block on the API and run in
the runtime's thread pool (``Runtime.offload``), with that copy as their input.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from trainer.api.manifest import SpecError
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import ResolvedSpec

from . import checkpoint_store, gang, profiles
from .builders import (
    RUN_LABEL,
    build_job,
    build_role,
    build_role_binding,
    build_service,
    build_service_account,
    describe_spec_error,
    is_gang,
    needs_own_account,
    resolve,
)
from .conditions import FAILED
from .folds_observe import observe_walk_forward
from .kube import to_kopf_error
from .names import account_name, claim_name, job_name, service_name
from .runs import Run, parse_run
from .runtime import Runtime
from .status import StatusChange, apply_decision, compose, observe, resolved_change
from .status_writer import run_fields, utcnow

# Rounds of one reconcile_gang call: a restart is at most write, delete, create, observe.
MAX_ROUNDS = 6

log = logging.getLogger(__name__)

Key = tuple[str, str]
Child = dict[str, Any]


def trim(body: kopf.Body, spec_keys: tuple[str, ...]) -> Child:
    """What the indexes keep of a Job or pod: identity, owners, a few spec fields, the status."""
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            k: meta[k]
            for k in (
                "name",
                "namespace",
                "uid",
                "labels",
                "creationTimestamp",
                "deletionTimestamp",
                "ownerReferences",
            )
            if k in meta
        },
        "spec": {k: v for k, v in (body.get("spec") or {}).items() if k in spec_keys},
        "status": dict(body.get("status") or {}),
    }


# --- on the event loop: copies of the indexes -----------------------------------------------------------------


def children(
    key: Key, jobs: kopf.Index[Key, Child], pods: kopf.Index[Key, Child]
) -> tuple[Child | None, list[Child]]:
    """The run's Job and pods from the indexes (event loop only)."""
    wanted = job_name(key[1])
    found = [j for j in jobs.get(key, []) if j["metadata"].get("name") == wanted]
    return (found[0] if found else None), list(pods.get(key, []))


def run_of(key: Key, runs: kopf.Index[Key, Run], job: Mapping[str, Any] | None = None) -> Run | None:
    """The parsed run from the ``runs`` index (event loop only); with a Job, the run that owns it."""
    candidates = list(runs.get(key, []))
    if job is not None:
        owners = {o.get("uid") for o in (job.get("metadata") or {}).get("ownerReferences") or []}
        candidates = [r for r in candidates if r.uid in owners]
    return candidates[0] if len(candidates) == 1 else None


# --- in the pool: API calls -----------------------------------------------------------------------------------


def observer(run: Run, job: Child, pods: list[Child]) -> Callable[[dict[str, Any]], StatusChange]:
    """How the status follows from a Job and its pods: the folds of a walk-forward run, else the Job's."""
    suspend = run.spec is not None and run.spec.suspend
    spec = run.spec
    if spec is not None and spec.walk_forward is not None:
        return lambda r: observe_walk_forward(r, spec, job, pods, utcnow(), spec_suspend=suspend)
    return lambda r: observe(r, job, pods, utcnow(), spec_suspend=suspend)


def write(rt: Runtime, run: Run, compute: Callable[[dict[str, Any]], StatusChange], what: str) -> None:
    try:
        rt.writer.write(run.namespace, run.name, compute, run.symbol)
    except Exception as exc:
        raise to_kopf_error(exc, f"{what} of {run.namespace}/{run.name}") from None


def fail_invalid(rt: Runtime, run: Run, err: SpecError) -> None:
    """Failed/InvalidSpec; the transition posts one Warning Event, its message starting with the field."""
    message = describe_spec_error(err)
    write(
        rt,
        run,
        lambda r: compose(r, [(FAILED, "True", "InvalidSpec", message)], utcnow()),
        "marking InvalidSpec",
    )


def fix_invalid(rt: Runtime, run: Run, pods: list[Child], logger: kopf.Logger) -> None:
    """A run that failed as InvalidSpec before any Job existed: mark it again, or create it now."""
    try:
        resolve(run, rt.settings)
    except SpecError as err:
        fail_invalid(rt, run, err)
        return
    write(
        rt,
        run,
        lambda r: compose(r, [(FAILED, "False", "SpecFixed", "the spec is valid now")], utcnow()),
        "clearing InvalidSpec",
    )
    ensure_children(rt, run, pods, logger)


def ensure_children(rt: Runtime, run: Run, pods: list[Child], logger: kopf.Logger) -> None:
    """Look before create: an existing Job of this run is adopted as is (an operator restart must neither
    duplicate it nor re-judge its spec under new operator settings); otherwise validate, then create. A
    multi-worker run goes through its gang reconcile, which also finishes a restart the operator was killed in."""
    wanted = job_name(run.name)
    if run.spec is not None and is_gang(run.spec):
        waiting = rt.gangs.run(run.key, lambda: reconcile_gang(rt, run))
        if waiting:
            raise kopf.TemporaryError(waiting, delay=5)
        logger.info("Job %s ready for %s/%s", wanted, run.namespace, run.name)
        return
    try:
        current = rt.kube.read("Job", run.namespace, wanted)
    except Exception as exc:
        raise to_kopf_error(exc, f"reading Job {wanted}") from None
    if current is None:
        current = create_children(rt, run)
    owners = {o.get("uid") for o in current.get("metadata", {}).get("ownerReferences") or []}
    if run.uid not in owners:
        raise kopf.TemporaryError(
            f"Job {wanted} belongs to an older TrainingRun of this name; waiting for its deletion", delay=5
        )
    write(rt, run, observer(run, current, pods), "updating the status")
    logger.info("Job %s ready for %s/%s", wanted, run.namespace, run.name)


def create_children(rt: Runtime, run: Run, attempt: int = 0) -> Child:
    """Validate (a SpecError is permanent), create the ServiceAccount/Role/RoleBinding (and a multi-worker
    run's Service, and the checkpoint claim of a run without another store), then the Job of gang attempt
    ``attempt`` (409: the Job of a concurrent or re-delivered create is returned instead; so are the others,
    which a restart creates again)."""
    try:
        spec = resolve(run, rt.settings)
    except SpecError as err:
        fail_invalid(rt, run, err)
        raise kopf.PermanentError(f"invalid spec: {describe_spec_error(err)}") from None
    job = build_job(run, spec, rt.settings, attempt)
    try:
        if needs_own_account(spec):
            for child in (build_service_account(run), build_role(run), build_role_binding(run)):
                rt.kube.create(child)
        if is_gang(spec):
            rt.kube.create(build_service(run, rt.settings))
        ensure_claim(rt, run, spec)
        created = rt.kube.create(job)[0]
    except kopf.TemporaryError:
        raise
    except Exception as exc:
        error = to_kopf_error(exc, f"creating Job {job['metadata']['name']}")
        if isinstance(error, kopf.PermanentError):
            message = str(error)
            write(
                rt,
                run,
                lambda r: compose(r, [(FAILED, "True", "JobRejected", message)], utcnow()),
                "marking JobRejected",
            )
        raise error from None
    record_resolved(rt, run, profiles.describe(run, spec, rt.settings))
    return created


def record_resolved(rt: Runtime, run: Run, resolved: ResolvedSpec) -> None:
    """``status.resolved`` of the Job just created. Not retried: the Job exists and has these values, and a
    retried create would find it and stop before this (a lost write leaves the section out, logged)."""
    try:
        rt.writer.write(run.namespace, run.name, lambda r: resolved_change(r, resolved), run.symbol)
    except Exception as exc:
        log.warning("status.resolved not written: %s", exc, extra=run_fields(run.namespace, run.name))


def ensure_claim(rt: Runtime, run: Run, spec: TrainingRunSpec) -> None:
    """Create the run's checkpoint claim (``trainop.checkpoint_store``) before its Job (409: the existing one,
    judged by ``unusable_claim``); a new one gets a Normal Event naming it and the checkpoint URI."""
    claim = checkpoint_store.build_claim(run, spec, rt.settings)
    if claim is None:
        return
    current, created = rt.kube.create(claim)
    if waiting := checkpoint_store.unusable_claim(current, run.uid):
        raise kopf.TemporaryError(waiting, delay=5)
    if created:
        message = checkpoint_store.describe_claim(claim, spec.checkpoint.uri)
        log.info("%s/%s: %s", run.namespace, run.name, message, extra=run_fields(run.namespace, run.name))
        with contextlib.suppress(Exception):  # an Event is a courtesy: the claim exists, the Job comes next
            rt.kube.post_event(run.ref(), "Normal", "CheckpointVolume", message)


job_failed = gang.job_failed


def fresh_pods(rt: Runtime, namespace: str, run: str, cached: list[Child]) -> list[Child]:
    """The run's pods straight from the API: the pod watch may lag the Job watch, and the failure reason
    (OOMKilled, exit code) is read from the pods once, when the Job fails."""
    try:
        return rt.kube.list_pods(namespace, f"{RUN_LABEL}={run}")
    except Exception:
        return cached


def refresh(rt: Runtime, run: Run, job: Child | None, pods: list[Child]) -> None:
    """The run's status from its Job and pods (a Job or pod event); a multi-worker run's gang reconciled
    when its Job failed, is of an older attempt, or is gone."""
    if run.spec is not None and is_gang(run.spec):
        if job is None or job_failed(job) or gang.deleting(job) or gang.attempt_of(job) < run.attempt:
            rt.gangs.run(run.key, lambda: reconcile_gang(rt, run))
        else:
            observe_gang(rt, run, job, pods)
        return
    if job is None:
        return
    walk_forward = run.spec is not None and run.spec.walk_forward is not None
    if job_failed(job) or (walk_forward and gang.job_complete(job)):  # a fold's statistics are read once, too
        pods = fresh_pods(rt, run.namespace, run.name, pods)
    write(rt, run, observer(run, job, pods), "updating the status")


def set_suspend(rt: Runtime, run: Run, suspend: bool, pods: list[Child]) -> None:
    """``spec.suspend`` to the Job (by name, not from the index: that may lag a just-created Job)."""
    wanted = job_name(run.name)
    try:
        patched = rt.kube.patch_job(run.namespace, wanted, {"spec": {"suspend": suspend}})
    except Exception as exc:
        raise to_kopf_error(exc, f"{'suspending' if suspend else 'resuming'} Job {wanted}") from None
    if patched is not None:  # None: no Job yet; it is created with the current spec.suspend
        write(rt, run, observer(run, patched, pods), "updating the status")


def delete_children(rt: Runtime, run: Run, pods: list[Child]) -> list[str]:
    """Delete what a deleted run still owns (the Job, its pods, the per-run RBAC, its checkpoint claim); returns
    the kinds deleted.
    Where a garbage collector runs it has usually done this already (404s, nothing deleted). Only objects
    whose owner reference is this run are touched: a same-named object of a newer run, or one orphaned on
    purpose (``--cascade=orphan``), is kept."""
    targets = [("Job", job_name(run.name)), ("Service", service_name(run.name))]
    targets.append(("PersistentVolumeClaim", claim_name(run.name)))  # only when this run owns it (below)
    if run.spec is None or needs_own_account(run.spec):
        account = account_name(run.name)
        targets += [("RoleBinding", account), ("Role", account), ("ServiceAccount", account)]
    deleted: list[str] = []
    try:
        for kind, name in targets:
            current = rt.kube.read(kind, run.namespace, name)
            owners = {
                o.get("uid") for o in ((current or {}).get("metadata") or {}).get("ownerReferences") or []
            }
            if current is not None and run.uid in owners and rt.kube.delete(kind, run.namespace, name):
                deleted.append(kind)
        if "Job" in deleted:  # its pods (the Job's own dependents, where no garbage collector takes them)
            for pod in pods:
                if rt.kube.delete("Pod", run.namespace, str(pod["metadata"]["name"])):
                    deleted.append("Pod")
    except Exception as exc:
        raise to_kopf_error(exc, f"deleting the children of {run.namespace}/{run.name}") from None
    return deleted


# --- multi-worker runs: the gang -------------------------------------------------------------------------------


def observe_gang(rt: Runtime, run: Run, job: Child, pods: list[Child]) -> None:
    """The status from one attempt's Job and its own pods (not those of an attempt before it)."""
    own = [p for p in pods if gang.owned_by(p, job)]
    suspend = run.spec is not None and run.spec.suspend

    def compute(current: dict[str, Any]) -> StatusChange:
        if gang.attempt_of(job) < gang.Gang.of(current.get("status")).attempt:
            return StatusChange()  # a Job the restart has replaced, seen late
        return observe(current, job, own, utcnow(), spec_suspend=suspend, gang=True)

    write(rt, run, compute, "updating the status")


def reconcile_gang(rt: Runtime, run: Run) -> str | None:
    """Take a multi-worker run's next steps (``trainop.gang.decide``), each from a fresh read of the run, its Job
    and its pods, until nothing is left to do (None) or it has to wait for the API (why). Call it through
    ``rt.gangs.run`` so that two rounds of one run never overlap. Each round takes the spec as it is then: a
    restart builds the next attempt's Job from it."""
    ns, wanted = run.namespace, job_name(run.name)
    for _ in range(MAX_ROUNDS):
        try:
            current = rt.kube.read_run(ns, run.name)
            job = rt.kube.read("Job", ns, wanted)
            pods = rt.kube.list_pods(ns, f"{RUN_LABEL}={run.name}")
        except Exception as exc:
            raise to_kopf_error(exc, f"reading the children of {ns}/{run.name}") from None
        meta = (current or {}).get("metadata") or {}
        if current is None or meta.get("uid") != run.uid or meta.get("deletionTimestamp"):
            return None  # deleted or being deleted (or re-created: its own events drive the new one)
        fresh = parse_run(current)
        spec = (
            fresh.spec or run.valid()
        )  # a spec made invalid since: judged by the old one, refused at create
        owners = {o.get("uid") for o in ((job or {}).get("metadata") or {}).get("ownerReferences") or []}
        if job is not None and run.uid not in owners:
            return f"Job {wanted} belongs to an older TrainingRun of this name; waiting for its deletion"
        decision = gang.decide(
            current.get("status"),
            backoff_limit=spec.backoff_limit,
            workers=spec.workers,
            job=job,
            pods=pods,
        )
        if decision.action == "Nothing":
            if job is not None and not job_failed(job):
                observe_gang(rt, run, job, pods)
            return None
        if decision.action == "Wait":
            _delete_pods(rt, ns, decision.pods)
            return decision.message
        _step(rt, fresh, spec, decision, job, pods)
    return f"{ns}/{run.name}: still restarting after {MAX_ROUNDS} steps"


def _step(
    rt: Runtime,
    run: Run,
    spec: TrainingRunSpec,
    decision: gang.Decision,
    job: Child | None,
    pods: list[Child],
) -> None:
    """One step that changes something: the status of a failed attempt, a stale Job, or the next Job."""
    ns = run.namespace
    what = decision.message or f"attempt {decision.gang.attempt}"
    log.info("gang of %s/%s: %s: %s", ns, run.name, decision.action, what, extra=run_fields(ns, run.name))
    if decision.action in ("Fail", "Restart"):

        def compute(current: dict[str, Any]) -> StatusChange:
            again = gang.decide(
                current.get("status"),
                backoff_limit=spec.backoff_limit,
                workers=spec.workers,
                job=job,
                pods=pods,
            )
            if again != decision:  # decided on another status: someone took this step already
                return StatusChange()
            return apply_decision(current, decision, utcnow())

        write(rt, run, compute, f"recording the failure of attempt {decision.gang.attempt}")
    elif decision.action == "DeleteJob":
        try:
            rt.kube.delete("Job", ns, job_name(run.name), uid=decision.job_uid)
        except Exception as exc:
            raise to_kopf_error(exc, f"deleting Job {job_name(run.name)} ({decision.message})") from None
        _delete_pods(rt, ns, decision.pods)
    elif decision.action == "CreateJob":
        create_children(rt, run, decision.gang.attempt)


def _delete_pods(rt: Runtime, namespace: str, names: tuple[str, ...]) -> None:
    """The pods of a deleted attempt (the garbage collector takes them too, where one runs)."""
    try:
        for name in names:
            rt.kube.delete("Pod", namespace, name)
    except Exception as exc:
        raise to_kopf_error(exc, f"deleting the pods of the last attempt in {namespace}") from None
