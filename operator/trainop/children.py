"""The run's children (ServiceAccount/Role/RoleBinding, Job, pods): create them, find them, observe them.

Why a module of its own: the kopf handlers in ``handlers`` stay thin adapters from events to calls, and the
child-resource logic they share lives here: look before create (an existing Job is adopted, never
duplicated or re-judged), validation failures turned into Failed/InvalidSpec, reading the Job and pod
indexes safely from handler threads, and refreshing the run's status from its children.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import kopf

from trainer.spec import SpecError

from .builders import (
    RUN_LABEL,
    build_job,
    build_role,
    build_role_binding,
    build_service_account,
    describe_spec_error,
    job_name,
    needs_own_account,
)
from .conditions import FAILED
from .kube import path, to_kopf_error
from .settings import Settings
from .status import compose, observe
from .status_writer import KUBE, utcnow, write_status

SETTINGS = Settings()


def trim(body: kopf.Body, spec_keys: tuple[str, ...]) -> dict[str, Any]:
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


Indexes = tuple["kopf.Index[Any, Any]", "kopf.Index[Any, Any]"]


def indexes(kwargs: Mapping[str, Any]) -> Indexes:
    """The two indexes kopf passes as ``run_jobs``/``run_pods`` kwargs (read from ``**kwargs``: as named
    parameters they would not fit kopf's handler protocols under mypy)."""
    return kwargs["run_jobs"], kwargs["run_pods"]


def children(
    namespace: str,
    name: str,
    jobs: kopf.Index[Any, Any],
    pods: kopf.Index[Any, Any],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    wanted = job_name(name)
    found = [j for j in snapshot(jobs, (namespace, name)) if j["metadata"].get("name") == wanted]
    return (found[0] if found else None), snapshot(pods, (namespace, name))


def snapshot(index: kopf.Index[Any, Any], key: tuple[str, str]) -> list[dict[str, Any]]:
    """A copy of one index entry. Sync handlers run in threads while the event loop updates the indexes, so
    a copy can meet "changed size during iteration"; the next try sees a consistent entry."""
    for _ in range(5):
        try:
            return list(index.get(key, []))
        except RuntimeError:
            continue
    return list(index.get(key, []))


def fail_invalid(body: kopf.Body, err: SpecError) -> None:
    """Failed/InvalidSpec; the transition posts one Warning Event, its message starting with the field."""
    meta = body.get("metadata") or {}
    message = describe_spec_error(err)
    write_status(
        str(meta.get("namespace")),
        str(meta.get("name")),
        lambda run: compose(run, [(FAILED, "True", "InvalidSpec", message)], utcnow()),
    )


def ensure_children(
    body: kopf.Body,
    namespace: str,
    name: str,
    jobs: kopf.Index[Any, Any],
    pods: kopf.Index[Any, Any],
    logger: kopf.Logger,
) -> None:
    """Look before create: an existing Job of this run is adopted as is (an operator restart must neither
    duplicate it nor re-judge its spec under new operator settings); otherwise validate, then create."""
    uid = body.get("metadata", {}).get("uid")
    wanted = job_name(name)
    try:
        current = KUBE.get(path("batch/v1", "jobs", namespace, wanted))
    except Exception as exc:
        raise to_kopf_error(exc, f"reading Job {wanted}") from None
    if current is None:
        current = create_children(body, namespace, name)
    owners = {o.get("uid") for o in current.get("metadata", {}).get("ownerReferences") or []}
    if uid not in owners:
        raise kopf.TemporaryError(
            f"Job {wanted} belongs to an older TrainingRun of this name; waiting for its deletion", delay=5
        )
    _, live_pods = children(namespace, name, jobs, pods)
    write_status(namespace, name, lambda run: observe(run, current, live_pods, utcnow()))
    logger.info("Job %s ready for %s/%s", wanted, namespace, name)


def create_children(body: kopf.Body, namespace: str, name: str) -> dict[str, Any]:
    """Validate (a SpecError is permanent), create the ServiceAccount/Role/RoleBinding, then the Job (409: the
    Job of a concurrent or re-delivered create is returned instead)."""
    try:
        job = build_job(body, SETTINGS)
    except SpecError as err:
        fail_invalid(body, err)
        raise kopf.PermanentError(f"invalid spec: {describe_spec_error(err)}") from None
    try:
        if needs_own_account(body):
            for child in (build_service_account(body), build_role(body), build_role_binding(body)):
                KUBE.create(child)
        return KUBE.create(job)[0]
    except kopf.TemporaryError:
        raise
    except Exception as exc:
        error = to_kopf_error(exc, f"creating Job {job['metadata']['name']}")
        if isinstance(error, kopf.PermanentError):
            write_status(
                namespace,
                name,
                lambda run: compose(run, [(FAILED, "True", "JobRejected", str(error))], utcnow()),
            )
        raise error from None


def job_failed(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Failed", "FailureTarget") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def fresh_pods(namespace: str, run: str, cached: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's pods straight from the API: the pod watch may lag the Job watch, and the failure reason
    (OOMKilled, exit code) is read from the pods once, when the Job fails."""
    try:
        answer = KUBE.request(
            "GET", path("v1", "pods", namespace), query=[("labelSelector", f"{RUN_LABEL}={run}")]
        )
    except Exception:
        return cached
    return list(answer.get("items") or [])


def refresh(
    namespace: str | None, labels: kopf.Labels, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]
) -> None:
    ns, run = str(namespace), str(labels.get(RUN_LABEL))
    job, live_pods = children(ns, run, jobs, pods)
    if job is None:
        return
    if job_failed(job):
        live_pods = fresh_pods(ns, run, live_pods)
    try:
        write_status(ns, run, lambda r: observe(r, job, live_pods, utcnow()))
    except Exception as exc:
        raise to_kopf_error(exc, f"updating the status of {ns}/{run}") from None
