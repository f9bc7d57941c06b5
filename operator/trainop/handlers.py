"""kopf handlers of the TrainingRun operator: thin adapters from events to the pure modules.

Why this shape: every decision (what Job, which condition, which reason) lives in ``builders``, ``conditions``
and ``status`` and is unit-tested; the handlers only fetch, call and write. Handlers doing API calls are sync
(kopf runs them in its thread pool; none sleeps), the ones that only touch memory are async.

Flow: create/resume -> validate with the shared model (a SpecError is permanent: Failed/InvalidSpec + Event),
create the ServiceAccount/Role/RoleBinding and the Job (deterministic names, look-before-create, 409 = already
there); Job and pod events -> conditions/phase/restarts on the run; a timer marks Stalled; spec.suspend
suspends the Job; delete -> children deleted explicitly too (owner references do it where a garbage collector
runs).

Status writes of the operator go through ``status_writer.write_status``: one lock per run, a fresh GET, then
a merge patch of the fields that changed, so concurrent Job/pod/timer handlers never overwrite each other's
conditions. The trainer patches only ``status.progress``/``checkpoint``/``metrics``, which the operator never
writes. Creating, finding and observing the children lives in ``children``; this module only registers
the kopf handlers (importing it registers them) and adapts their arguments."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from trainer.spec import API_GROUP, API_VERSION, PLURAL, SpecError

from . import metrics
from .builders import (
    RUN_LABEL,
    account_name,
    job_name,
    needs_own_account,
    validate_run,
)
from .children import SETTINGS, children, ensure_children, fail_invalid, indexes, refresh, snapshot, trim
from .conditions import FAILED, get_condition, stall_update
from .kube import path, to_kopf_error
from .settings import parse_duration
from .status import StatusChange, compose, observe, stall_timeout
from .status_writer import KUBE, forget_lock, utcnow, write_status

TR = (API_GROUP, API_VERSION, PLURAL)
CHILD = {RUN_LABEL: kopf.PRESENT}
FINALIZER = f"{API_GROUP}/trainop-cleanup"
STORAGE_PREFIX = f"trainop.{API_GROUP}"


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


@kopf.index("batch", "v1", "jobs", labels=CHILD)
def run_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[RUN_LABEL]): trim(body, ("suspend",))}


@kopf.index("v1", "pods", labels=CHILD)
def run_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[RUN_LABEL]): trim(body, ("nodeName",))}


# --- create / resume ----------------------------------------------------------------------------------------


@kopf.on.resume(*TR)
@kopf.on.create(*TR)
def ensure_job(
    body: kopf.Body, name: str, namespace: str | None, status: kopf.Status, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Create the run's children once; a finished run (Job perhaps gone with its TTL) is left alone."""
    with metrics.timed("ensure_job"):
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        ensure_children(body, str(namespace), name, *indexes(kwargs), logger)


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
        run_jobs, run_pods = indexes(kwargs)
        failed = get_condition(status.get("conditions"), FAILED) or {}
        if (
            failed.get("status") == "True"
            and failed.get("reason") == "InvalidSpec"
            and not status.get("jobName")
        ):
            try:
                validate_run(body, SETTINGS)
            except SpecError as err:
                fail_invalid(body, err)
                return
            write_status(
                ns,
                run,
                lambda r: compose(r, [(FAILED, "False", "SpecFixed", "the spec is valid now")], utcnow()),
            )
            ensure_children(body, ns, run, run_jobs, run_pods, logger)
            return
        _, pods = children(ns, run, run_jobs, run_pods)
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
                write_status(ns, run, lambda r: observe(r, patched, pods, utcnow()))
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


@kopf.on.event("batch", "v1", "jobs", labels=CHILD)
def job_event(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    with metrics.timed("job_event"):
        refresh(namespace, labels, *indexes(kwargs))


@kopf.on.event("v1", "pods", labels=CHILD)
def pod_event(namespace: str | None, labels: kopf.Labels, **kwargs: Any) -> None:
    with metrics.timed("pod_event"):
        refresh(namespace, labels, *indexes(kwargs))


@kopf.on.event(*TR)
async def run_event(
    type: str | None, body: kopf.Body, name: str | None, namespace: str | None, **_: Any
) -> None:
    """Gauges follow every version of the run (including the trainer's progress patches)."""
    if type == "DELETED":
        metrics.forget_run(str(namespace), str(name))
        forget_lock(str(namespace), str(name))
    else:
        metrics.observe_run(body)


# --- stall timer --------------------------------------------------------------------------------------------


def _stall_change(run: dict[str, Any], timeout: float) -> StatusChange:
    now = utcnow()
    update = stall_update(run.get("status") or {}, timeout, now)
    return compose(run, [update], now) if update else StatusChange()


@kopf.timer(*TR, interval=SETTINGS.timer_interval_seconds, sharp=False)
async def stall_check(body: kopf.Body, name: str | None, namespace: str | None, **_: Any) -> None:
    """Stalled when a Running run reports no progress for spec.stallTimeout; cleared when progress resumes."""
    with metrics.timed("stall_check"):
        timeout = parse_duration(stall_timeout(body, SETTINGS.stall_timeout))
        if stall_update(body.get("status") or {}, timeout, utcnow()) is None:
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
        _, run_pods = indexes(kwargs)
        urls = [path("batch/v1", "jobs", ns, job_name(run))]
        urls += [path("v1", "pods", ns, p["metadata"]["name"]) for p in snapshot(run_pods, (ns, run))]
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
