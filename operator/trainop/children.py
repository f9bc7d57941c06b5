"""The run's children (ServiceAccount/Role/RoleBinding, Job, pods): create them, find them, observe them.

Why a module of its own: the kopf handlers in ``handlers`` stay thin adapters from events to calls, and the
child-resource logic they share lives here: look before create (an existing Job is adopted, never
duplicated or re-judged), validation failures turned into Failed/InvalidSpec, and refreshing the run's status
from its children.

Two kinds of functions: ``children``/``run_of`` read kopf's indexes and must be called on the event loop (the
only thread that changes them, so a copy taken there is consistent); the others block on the API and run in
the runtime's thread pool (``Runtime.offload``), with that copy as their input.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import kopf

from trainer.api.manifest import SpecError

from .builders import (
    RUN_LABEL,
    account_name,
    build_job,
    build_role,
    build_role_binding,
    build_service_account,
    describe_spec_error,
    job_name,
    needs_own_account,
    resolve,
)
from .conditions import FAILED
from .kube import to_kopf_error
from .runs import Run
from .runtime import Runtime
from .status import StatusChange, compose, observe
from .status_writer import utcnow

Key = tuple[str, str]
Child = dict[str, Any]


def trim(body: kopf.Body, spec_keys: tuple[str, ...]) -> Child:
    """What the indexes keep of a Job or pod: identity, owners, a few spec fields, the status."""
    meta = body.get("metadata") or {}
    return {
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "ownerReferences")
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
    duplicate it nor re-judge its spec under new operator settings); otherwise validate, then create."""
    wanted = job_name(run.name)
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
    suspend = run.spec is not None and run.spec.suspend
    write(rt, run, lambda r: observe(r, current, pods, utcnow(), spec_suspend=suspend), "updating the status")
    logger.info("Job %s ready for %s/%s", wanted, run.namespace, run.name)


def create_children(rt: Runtime, run: Run) -> Child:
    """Validate (a SpecError is permanent), create the ServiceAccount/Role/RoleBinding, then the Job (409: the
    Job of a concurrent or re-delivered create is returned instead)."""
    try:
        spec = resolve(run, rt.settings)
    except SpecError as err:
        fail_invalid(rt, run, err)
        raise kopf.PermanentError(f"invalid spec: {describe_spec_error(err)}") from None
    job = build_job(run, spec, rt.settings)
    try:
        if needs_own_account(spec):
            for child in (build_service_account(run), build_role(run), build_role_binding(run)):
                rt.kube.create(child)
        return rt.kube.create(job)[0]
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


def job_failed(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Failed", "FailureTarget") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def fresh_pods(rt: Runtime, namespace: str, run: str, cached: list[Child]) -> list[Child]:
    """The run's pods straight from the API: the pod watch may lag the Job watch, and the failure reason
    (OOMKilled, exit code) is read from the pods once, when the Job fails."""
    try:
        return rt.kube.list_pods(namespace, f"{RUN_LABEL}={run}")
    except Exception:
        return cached


def refresh(rt: Runtime, run: Run, job: Child, pods: list[Child]) -> None:
    """The run's status from its Job and pods (a Job or pod event)."""
    if job_failed(job):
        pods = fresh_pods(rt, run.namespace, run.name, pods)
    suspend = run.spec is not None and run.spec.suspend
    write(rt, run, lambda r: observe(r, job, pods, utcnow(), spec_suspend=suspend), "updating the status")


def set_suspend(rt: Runtime, run: Run, suspend: bool, pods: list[Child]) -> None:
    """``spec.suspend`` to the Job (by name, not from the index: that may lag a just-created Job)."""
    wanted = job_name(run.name)
    try:
        patched = rt.kube.patch_job(run.namespace, wanted, {"spec": {"suspend": suspend}})
    except Exception as exc:
        raise to_kopf_error(exc, f"{'suspending' if suspend else 'resuming'} Job {wanted}") from None
    if patched is not None:  # None: no Job yet; it is created with the current spec.suspend
        write(
            rt,
            run,
            lambda r: observe(r, patched, pods, utcnow(), spec_suspend=suspend),
            "updating the status",
        )


def delete_children(rt: Runtime, run: Run, pods: list[Child]) -> list[str]:
    """Delete what a deleted run still owns (the Job, its pods, the per-run RBAC); returns the kinds deleted.
    Where a garbage collector runs it has usually done this already (404s, nothing deleted). Only objects
    whose owner reference is this run are touched: a same-named object of a newer run, or one orphaned on
    purpose (``--cascade=orphan``), is kept."""
    targets = [("Job", job_name(run.name))]
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
