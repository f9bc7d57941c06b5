"""kopf handlers of the TrainingRun operator: thin adapters from events to the pure modules.

Why this shape: every decision (what Job, which condition, which reason) lives in ``builders``, ``conditions``
and ``status`` and is unit-tested; the handlers only fetch, call and write. Handlers doing API calls are sync
(kopf runs them in its thread pool; none sleeps), the ones that only touch memory are async.

Flow: create/resume -> validate with the shared model (a SpecError is permanent: Failed/InvalidSpec + Event),
create the ServiceAccount/Role/RoleBinding and the Job (deterministic names, look-before-create, 409 = already
there); Job and pod events -> conditions/phase/restarts on the run; a timer marks Stalled; spec.suspend
suspends the Job; delete -> children deleted explicitly too (owner references do it where a garbage collector
runs).

Status writes of the operator go through ``write_status``: one lock per run, a fresh GET, then a merge patch
of the fields that changed, so concurrent Job/pod/timer handlers never overwrite each other's conditions. The
trainer patches only ``status.progress``/``checkpoint``/``metrics``, which the operator never writes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, cast

import kopf

from trainer.spec import API_GROUP, API_VERSION, PLURAL, SpecError

from . import metrics
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
    validate_run,
)
from .conditions import FAILED, get_condition, stall_update
from .kube import Kube, path, run_path, to_kopf_error
from .settings import Settings, parse_duration
from .status import StatusChange, compose, observe, stall_timeout

TR = (API_GROUP, API_VERSION, PLURAL)
CHILD = {RUN_LABEL: kopf.PRESENT}
FINALIZER = f"{API_GROUP}/trainop-cleanup"
STORAGE_PREFIX = f"trainop.{API_GROUP}"

SETTINGS = Settings()
KUBE = Kube()

_locks: dict[tuple[str, str], threading.Lock] = {}
_locks_guard = threading.Lock()


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _lock(namespace: str, name: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault((namespace, name), threading.Lock())


def write_status(
    namespace: str, name: str, compute: Callable[[dict[str, Any]], StatusChange]
) -> StatusChange | None:
    """GET the run, compute its status change, merge-patch what changed, post Events; one writer per run."""
    with _lock(namespace, name):
        run = KUBE.get(run_path(namespace, name))
        if run is None:
            return None
        change = compute(run)
        if (
            change.status
            and KUBE.merge_patch(run_path(namespace, name, "status"), {"status": change.status}) is None
        ):
            return None  # deleted meanwhile
    for ev in change.events:
        kopf.event(_body(run), type=ev.type, reason=ev.reason, message=ev.message)
    if "phase" in change.status:
        symbol = str((run.get("spec") or {}).get("symbol", ""))
        metrics.count_transition(namespace, symbol, change.old_phase, change.phase, change.reason)
    return change


# --- operator lifecycle -------------------------------------------------------------------------------------


class _QuietRoutine(logging.Filter):
    """Drop kopf's per-event "succeeded" lines of the watch handlers and the timer (thousands per minute at
    1,000 runs); failures and the create/delete handlers still log."""

    NOISY = (
        "Handler 'run_event' succeeded",
        "Handler 'job_event' succeeded",
        "Handler 'pod_event' succeeded",
        "Timer 'stall_check' succeeded",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISY)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    logger.info("trainop settings: %s", SETTINGS.describe())
    objects_log = logging.getLogger("kopf.objects")
    if not any(isinstance(f, _QuietRoutine) for f in objects_log.filters):
        objects_log.addFilter(_QuietRoutine())
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # our own Events are posted explicitly with kopf.event
    settings.watching.connect_timeout = 60
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 16
    memo["metrics_runner"] = await metrics.start_server(SETTINGS.metrics_host, SETTINGS.metrics_port)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runner = memo.get("metrics_runner")
    if runner is not None:
        await runner.cleanup()


# --- indexes of the children, so that Job/pod events need no extra API calls --------------------------------


def _trim(body: kopf.Body, spec_keys: tuple[str, ...]) -> dict[str, Any]:
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


@kopf.index("batch", "v1", "jobs", labels=CHILD)
def run_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[RUN_LABEL]): _trim(body, ("suspend",))}


@kopf.index("v1", "pods", labels=CHILD)
def run_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[RUN_LABEL]): _trim(body, ("nodeName",))}


Indexes = tuple["kopf.Index[Any, Any]", "kopf.Index[Any, Any]"]


def _indexes(kwargs: Mapping[str, Any]) -> Indexes:
    """The two indexes kopf passes as ``run_jobs``/``run_pods`` kwargs (read from ``**kwargs``: as named
    parameters they would not fit kopf's handler protocols under mypy)."""
    return kwargs["run_jobs"], kwargs["run_pods"]


def _body(obj: Mapping[str, Any]) -> kopf.Body:
    return kopf.Body(cast(kopf.RawBody, dict(obj)))


def _children(
    namespace: str,
    name: str,
    jobs: kopf.Index[Any, Any],
    pods: kopf.Index[Any, Any],
) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    wanted = job_name(name)
    found = [j for j in _snapshot(jobs, (namespace, name)) if j["metadata"].get("name") == wanted]
    return (found[0] if found else None), _snapshot(pods, (namespace, name))


def _snapshot(index: kopf.Index[Any, Any], key: tuple[str, str]) -> list[dict[str, Any]]:
    """A copy of one index entry. Sync handlers run in threads while the event loop updates the indexes, so
    a copy can meet "changed size during iteration"; the next try sees a consistent entry."""
    for _ in range(5):
        try:
            return list(index.get(key, []))
        except RuntimeError:
            continue
    return list(index.get(key, []))


# --- create / resume ----------------------------------------------------------------------------------------


def _fail_invalid(body: kopf.Body, err: SpecError) -> None:
    """Failed/InvalidSpec; the transition posts one Warning Event, its message starting with the field."""
    meta = body.get("metadata") or {}
    message = describe_spec_error(err)
    write_status(
        str(meta.get("namespace")),
        str(meta.get("name")),
        lambda run: compose(run, [(FAILED, "True", "InvalidSpec", message)], _now()),
    )


def _ensure_children(
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
        current = _create_children(body, namespace, name)
    owners = {o.get("uid") for o in current.get("metadata", {}).get("ownerReferences") or []}
    if uid not in owners:
        raise kopf.TemporaryError(
            f"Job {wanted} belongs to an older TrainingRun of this name; waiting for its deletion", delay=5
        )
    _, live_pods = _children(namespace, name, jobs, pods)
    write_status(namespace, name, lambda run: observe(run, current, live_pods, _now()))
    logger.info("Job %s ready for %s/%s", wanted, namespace, name)


def _create_children(body: kopf.Body, namespace: str, name: str) -> dict[str, Any]:
    """Validate (a SpecError is permanent), create the ServiceAccount/Role/RoleBinding, then the Job (409: the
    Job of a concurrent or re-delivered create is returned instead)."""
    try:
        job = build_job(body, SETTINGS)
    except SpecError as err:
        _fail_invalid(body, err)
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
                lambda run: compose(run, [(FAILED, "True", "JobRejected", str(error))], _now()),
            )
        raise error from None


@kopf.on.resume(*TR)
@kopf.on.create(*TR)
def ensure_job(
    body: kopf.Body, name: str, namespace: str | None, status: kopf.Status, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Create the run's children once; a finished run (Job perhaps gone with its TTL) is left alone."""
    with metrics.timed("ensure_job"):
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        _ensure_children(body, str(namespace), name, *_indexes(kwargs), logger)


@kopf.on.update(*TR, field="spec")
def spec_changed(
    body: kopf.Body,
    name: str,
    namespace: str | None,
    status: kopf.Status,
    diff: kopf.Diff,
    logger: kopf.Logger,
    **kwargs: Any,
) -> None:
    """suspend goes to the Job; a fixed invalid spec is retried; other changes cannot reach a created Job."""
    with metrics.timed("spec_changed"):
        ns, run = str(namespace), name
        run_jobs, run_pods = _indexes(kwargs)
        failed = get_condition(status.get("conditions"), FAILED) or {}
        if (
            failed.get("status") == "True"
            and failed.get("reason") == "InvalidSpec"
            and not status.get("jobName")
        ):
            try:
                validate_run(body, SETTINGS)
            except SpecError as err:
                _fail_invalid(body, err)
                return
            write_status(
                ns,
                run,
                lambda r: compose(r, [(FAILED, "False", "SpecFixed", "the spec is valid now")], _now()),
            )
            _ensure_children(body, ns, run, run_jobs, run_pods, logger)
            return
        _, pods = _children(ns, run, run_jobs, run_pods)
        changed = [".".join(str(p) for p in item[1]) or "spec" for item in diff]
        if "suspend" in changed:  # by name, not from the index: that may lag a just-created Job
            suspend = bool(body.get("spec", {}).get("suspend"))
            url = path("batch/v1", "jobs", ns, job_name(run))
            try:
                patched = KUBE.merge_patch(url, {"spec": {"suspend": suspend}})
            except Exception as exc:
                raise to_kopf_error(
                    exc, f"{'suspending' if suspend else 'resuming'} Job {job_name(run)}"
                ) from None
            if patched is not None:  # None: no Job yet; it is created with the current spec.suspend
                write_status(ns, run, lambda r: observe(r, patched, pods, _now()))
        others = [c for c in changed if c != "suspend"]
        if others and status.get("jobName"):
            kopf.event(
                body,
                type="Warning",
                reason="SpecChangeIgnored",
                message=f"{', '.join('spec.' + c for c in others)} changed after the Job was created; "
                "delete and re-create the TrainingRun to apply it",
            )


# --- children -> status -------------------------------------------------------------------------------------


def _job_failed(job: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") in ("Failed", "FailureTarget") and c.get("status") == "True"
        for c in (job.get("status") or {}).get("conditions") or []
    )


def _fresh_pods(namespace: str, run: str, cached: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The run's pods straight from the API: the pod watch may lag the Job watch, and the failure reason
    (OOMKilled, exit code) is read from the pods once, when the Job fails."""
    try:
        answer = KUBE.request(
            "GET", path("v1", "pods", namespace), query=[("labelSelector", f"{RUN_LABEL}={run}")]
        )
    except Exception:
        return cached
    return list(answer.get("items") or [])


def _refresh(
    namespace: str | None, labels: kopf.Labels, jobs: kopf.Index[Any, Any], pods: kopf.Index[Any, Any]
) -> None:
    ns, run = str(namespace), str(labels.get(RUN_LABEL))
    job, live_pods = _children(ns, run, jobs, pods)
    if job is None:
        return
    if _job_failed(job):
        live_pods = _fresh_pods(ns, run, live_pods)
    try:
        write_status(ns, run, lambda r: observe(r, job, live_pods, _now()))
    except Exception as exc:
        raise to_kopf_error(exc, f"updating the status of {ns}/{run}") from None


@kopf.on.event("batch", "v1", "jobs", labels=CHILD)
def job_event(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    with metrics.timed("job_event"):
        _refresh(namespace, labels, *_indexes(kwargs))


@kopf.on.event("v1", "pods", labels=CHILD)
def pod_event(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    with metrics.timed("pod_event"):
        _refresh(namespace, labels, *_indexes(kwargs))


@kopf.on.event(*TR)
async def run_event(
    type: str | None, body: kopf.Body, name: str | None, namespace: str | None, **_: Any
) -> None:
    """Gauges follow every version of the run (including the trainer's progress patches)."""
    if type == "DELETED":
        metrics.forget_run(str(namespace), str(name))
        with _locks_guard:
            _locks.pop((str(namespace), str(name)), None)
    else:
        metrics.observe_run(body)


# --- stall timer --------------------------------------------------------------------------------------------


def _stall_change(run: dict[str, Any], timeout: float) -> StatusChange:
    now = _now()
    update = stall_update(run.get("status") or {}, timeout, now)
    return compose(run, [update], now) if update else StatusChange()


@kopf.timer(*TR, interval=SETTINGS.timer_interval_seconds, sharp=False)
async def stall_check(body: kopf.Body, name: str | None, namespace: str | None, **_: Any) -> None:
    """Stalled when a Running run reports no progress for spec.stallTimeout; cleared when progress resumes."""
    with metrics.timed("stall_check"):
        timeout = parse_duration(stall_timeout(body, SETTINGS.stall_timeout))
        if stall_update(body.get("status") or {}, timeout, _now()) is None:
            return
        try:
            await asyncio.to_thread(
                write_status, str(namespace), str(name), lambda run: _stall_change(run, timeout)
            )
        except Exception as exc:
            raise to_kopf_error(exc, "updating Stalled") from None


# --- delete -------------------------------------------------------------------------------------------------


@kopf.on.delete(*TR)
def delete_children(
    body: kopf.Body, name: str, namespace: str | None, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Owner references delete everything where a garbage collector runs; this does it where none runs."""
    with metrics.timed("delete_children"):
        ns, run = str(namespace), name
        _, run_pods = _indexes(kwargs)
        urls = [path("batch/v1", "jobs", ns, job_name(run))]
        urls += [path("v1", "pods", ns, p["metadata"]["name"]) for p in _snapshot(run_pods, (ns, run))]
        if needs_own_account(body):
            account = account_name(run)
            urls += [
                path("rbac.authorization.k8s.io/v1", "rolebindings", ns, account),
                path("rbac.authorization.k8s.io/v1", "roles", ns, account),
                path("v1", "serviceaccounts", ns, account),
            ]
        try:
            deleted = [url.rsplit("/", 2)[-2] for url in urls if KUBE.delete(url, propagation="Background")]
        except Exception as exc:
            raise to_kopf_error(exc, f"deleting the children of {ns}/{run}") from None
        metrics.forget_run(ns, run)
        logger.info("deleted %s of %s/%s", ", ".join(deleted) or "nothing", ns, run)
