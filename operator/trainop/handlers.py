"""kopf handlers of the TrainingRun operator: thin adapters from events to the pure modules.

Importing this module registers the handlers and connects to nothing: the startup handler makes the
process's ``Runtime`` (settings, typed API clients, status writer, thread pool, stall sweep) and keeps it in
kopf's ``memo``. The handlers are ``async``: they read kopf's indexes on the event loop (the only thread that
changes them, so what they read is consistent) and hand the blocking API work to the runtime's thread pool.
Each body is parsed once into the shared spec model (``parse_run``); the Job and pod handlers and the stall
sweep get the parsed run from the ``runs`` index.

No finalizer: children carry owner references, so the cluster's garbage collector deletes them and
``kubectl delete tr`` completes at once even while the operator is down. Where no garbage collector runs,
the operator deletes what the run still owns when it sees the run go (``run_event``). Not a kopf on-delete
handler: kopf calls those only while its own finalizer holds the object, even with ``optional=True``. kopf's
per-run timers would need a finalizer too, hence one stall sweep (``stall``).

Errors: ``kopf.PermanentError`` for what retrying cannot fix (an invalid spec, an object the API server
rejects), ``kopf.TemporaryError`` with a delay for everything else (``kube.to_kopf_error``). Watch handlers
(Job/pod events) are not retried by kopf; their failures are logged with the run and fixed by the next event.

Multi-worker runs: a Job or pod event of one (its Job failed, replaced or gone) drives its gang restart
(``children.reconcile_gang``); the create/resume handler finishes one the operator was stopped in, and retries
while the pods of the last attempt are still going."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from trainer.api.spec import API_GROUP, API_VERSION, PLURAL

from . import children as ch
from . import logs, prometheus, stall
from .builders import RUN_LABEL, describe_spec_error, is_gang
from .conditions import FAILED, get_condition
from .kube import EVENT_COMPONENT, Kube, instance_name
from .runs import Run, parse_run
from .runtime import MEMO_KEY, Runtime, runtime
from .settings import Settings
from .status import Event
from .status_writer import run_fields

TR = (API_GROUP, API_VERSION, PLURAL)
CHILD = {RUN_LABEL: kopf.PRESENT}
# Earlier versions put this finalizer on every run; naming it lets kopf remove it, as no handler needs it now.
LEGACY_FINALIZER = f"{API_GROUP}/trainop-cleanup"
STORAGE_PREFIX = f"trainop.{API_GROUP}"

log = logging.getLogger(__name__)


def index(kwargs: Mapping[str, Any], name: str) -> kopf.Index[Any, Any]:
    """An index kopf passes under its function's name (read from ``**kwargs``: as named parameters the
    indexes would not fit kopf's handler protocols under mypy)."""
    return cast("kopf.Index[Any, Any]", kwargs[name])


def _children(key: tuple[str, str], kwargs: Mapping[str, Any]) -> tuple[ch.Child | None, list[ch.Child]]:
    return ch.children(key, index(kwargs, "run_jobs"), index(kwargs, "run_pods"))


# --- operator lifecycle -------------------------------------------------------------------------------------


@kopf.on.startup()
async def startup(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    config = Settings()
    logs.install_filters()
    logger.info("trainop settings: %s", config.describe())
    settings.persistence.finalizer = LEGACY_FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=STORAGE_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=STORAGE_PREFIX, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # the status Events are posted by the status writer
    settings.posting.reporting_component = EVENT_COMPONENT
    settings.posting.reporting_instance = instance_name()
    settings.watching.connect_timeout = 60
    settings.watching.server_timeout = 300
    settings.execution.max_workers = 16  # the sync index functions
    rt = Runtime.create(config, await asyncio.to_thread(Kube.connect))
    memo[MEMO_KEY] = rt
    runner = await prometheus.start_server(config.metrics_host, config.metrics_port)
    rt.closers.append(runner.cleanup)
    rt.tasks.append(asyncio.create_task(stall.sweep_forever(rt, index(kwargs, "runs")), name="stall sweep"))


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    rt = memo.get(MEMO_KEY)
    if isinstance(rt, Runtime):
        await rt.close()


# --- indexes: the parsed runs, and their children so that Job/pod events need no extra API calls -----------


@kopf.index(*TR)
def runs(body: kopf.Body, **_: Any) -> dict[Any, Any]:
    run = parse_run(body)
    return {run.key: run}


@kopf.index("batch", "v1", "jobs", labels=CHILD)
def run_jobs(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[RUN_LABEL]): ch.trim(body, ("suspend", "parallelism", "completions"))}


@kopf.index("v1", "pods", labels=CHILD)
def run_pods(namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, labels[RUN_LABEL]): ch.trim(body, ("nodeName",))}


# --- create / resume / change -------------------------------------------------------------------------------


@kopf.on.resume(*TR)
@kopf.on.create(*TR)
async def ensure_job(
    body: kopf.Body, status: kopf.Status, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    """Create the run's children once; a finished run (Job perhaps gone with its TTL) is left alone."""
    with prometheus.timed("ensure_job"):
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        run = parse_run(body)
        _, pods = _children(run.key, kwargs)
        rt = runtime(memo)
        await rt.offload(ch.ensure_children, rt, run, pods, logger)


@kopf.on.update(*TR, field="spec")
async def spec_changed(
    body: kopf.Body, status: kopf.Status, diff: kopf.Diff, memo: kopf.Memo, logger: kopf.Logger, **kwargs: Any
) -> None:
    """suspend goes to the Job; a fixed invalid spec is retried; other changes cannot reach a created Job."""
    with prometheus.timed("spec_changed"):
        rt, run = runtime(memo), parse_run(body)
        _, pods = _children(run.key, kwargs)
        failed = get_condition(status.get("conditions"), FAILED) or {}
        if (
            failed.get("status") == "True"
            and failed.get("reason") == "InvalidSpec"
            and not status.get("jobName")
        ):
            await rt.offload(ch.fix_invalid, rt, run, pods, logger)
            return
        changed = [".".join(str(p) for p in item[1]) or "spec" for item in diff]
        if run.spec is None:
            if status.get("jobName"):
                detail = describe_spec_error(run.error) if run.error else "spec: invalid"
                message = (
                    f"the changed spec is invalid ({detail}); the Job keeps the spec it was created with"
                )
                await rt.offload(rt.writer.post, run.ref(), Event("Warning", "SpecChangeIgnored", message))
            return
        if "suspend" in changed:
            await rt.offload(ch.set_suspend, rt, run, run.spec.suspend, pods)
        others = [c for c in changed if c != "suspend"]
        if others and status.get("jobName"):
            fields = ", ".join("spec." + c for c in others)
            how = "delete and re-create the TrainingRun to apply it"
            if is_gang(run.spec):  # every gang restart builds its Job from the spec as it is then
                how = "it applies from the next gang restart (or delete and re-create the TrainingRun)"
            message = f"{fields} changed after the Job was created; {how}"
            await rt.offload(rt.writer.post, run.ref(), Event("Warning", "SpecChangeIgnored", message))


# --- children -> status -------------------------------------------------------------------------------------


async def _refresh(
    handler: prometheus.Handler,
    namespace: str | None,
    labels: kopf.Labels,
    memo: kopf.Memo,
    kwargs: Mapping[str, Any],
) -> None:
    key = (str(namespace), str(labels.get(RUN_LABEL)))
    job, pods = _children(key, kwargs)
    run: Run | None = ch.run_of(key, index(kwargs, "runs"), job)
    gang = run is not None and run.spec is not None and is_gang(run.spec)
    if run is None or (job is None and not gang):
        # No Job yet (or gone with its TTL), or a Job of an older run of this name. A multi-worker run
        # without a Job is between two attempts of a gang restart: the refresh goes on to create the next.
        return
    rt = runtime(memo)
    try:
        with prometheus.timed(handler):
            await rt.offload(ch.refresh, rt, run, job, pods)
    except Exception as exc:
        log.warning("status of %s/%s not updated: %s", *key, exc, extra=run_fields(*key))


@kopf.on.event("batch", "v1", "jobs", labels=CHILD)
async def job_event(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any) -> None:
    await _refresh("job_event", namespace, labels, memo, kwargs)


@kopf.on.event("v1", "pods", labels=CHILD)
async def pod_event(namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any) -> None:
    await _refresh("pod_event", namespace, labels, memo, kwargs)


@kopf.on.event(*TR)
async def run_event(
    type: str | None, body: kopf.Body, name: str | None, namespace: str | None, memo: kopf.Memo, **kwargs: Any
) -> None:
    """Gauges follow every version of the run (including the trainer's progress patches); a deleted run's
    series and children go."""
    key = (str(namespace), str(name))
    if type != "DELETED":
        run = ch.run_of(key, index(kwargs, "runs"))
        prometheus.observe_run(body, run.symbol if run else "")
        return
    rt = runtime(memo)
    prometheus.forget_run(*key)
    rt.writer.forget(*key)
    run, (_, pods) = parse_run(body), _children(key, kwargs)
    try:
        with prometheus.timed("delete_children"):
            deleted = await rt.offload(ch.delete_children, rt, run, pods)
    except Exception as exc:
        log.warning("children of %s/%s not deleted: %s", *key, exc, extra=run_fields(*key))
        return
    if deleted:
        log.info("deleted %s of %s/%s", ", ".join(deleted), *key, extra=run_fields(*key))


from . import schedule_handlers, sweep_handlers  # noqa: E402,F401
