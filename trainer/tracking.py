"""Experiment tracking in MLflow (``spec.tracking.mlflow``, ``--mlflow-uri``): params, per-epoch and final
metrics, artefacts and tags of one training, in one MLflow run across resumes.

Why like this:

- Tracking is a by-product: a tracking server that is down, slow or refusing must never stop or slow training.
  Every call goes through one background thread and a queue; the epoch loop only appends to it. A failure is
  one warning line (once per run); transient failures (connection, timeout, 5xx, 429) are retried with backoff
  until ``deadlineSeconds`` after the outage began, then tracking gives up (an info line) and drops what is
  queued. At the end the queue is flushed with a bounded wait (shorter after a SIGTERM: the pod's grace period
  belongs to the checkpoint); a failure while closing is not retried. The client is imported in the background
  while the data loads (``start_tracking``), so a run stopped soon after its first epoch has opened its run.
- One MLflow run per training, found again by a tag (``trainer.run-key``: the TrainingRun's uid in a cluster,
  the checkpoint URI locally) rather than by a run id stored in the checkpoint: a pod preempted after it created
  the MLflow run but before its first checkpoint would otherwise create a second run on its retry. The tag is
  set when the run is created, so the search finds it whatever the checkpoint holds. ``resume: never`` trains
  from scratch and so starts a new MLflow run.
- mlflow (the optional extra ``tracking``: mlflow-skinny) is imported only here, lazily, off the main thread;
  without it a run that asks for tracking fails fast with exit 2 (``check``) instead of training untracked.
- Credentials come only from the MLflow client's own environment (MLFLOW_TRACKING_USERNAME/PASSWORD or
  MLFLOW_TRACKING_TOKEN; the operator fills the first two from ``credentialsSecret``); the spec refuses a URI with
  ``user:password@``, and every URI or error text logged goes through ``redact_url``/``oneline``.
- What is logged and under which key is decided by pure functions in ``trainer.tracking_plan``. The MLflow
  calls sit behind a small interface (``Api``; ``MlflowApi`` is the real one) so that the retry and identity
  rules are unit-tested without a server; tests/trainer/test_tracking_server.py runs a real one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trainer.api.errors import Preempted
from trainer.storage import redact_url
from trainer.tracking_plan import (
    RUN_KEY_TAG,
    Plan,
    check,
    epoch_metrics,
    is_transient,
    oneline,
    plan_of,
    split_final,
)

if TYPE_CHECKING:
    from trainer.api.spec import TrainingRunSpec
    from trainer.api.status import EpochStats
    from trainer.status_report import StatusReporter

log = logging.getLogger(__name__)

CLOSE_SECONDS = 15.0  # the end of a successful run: the final metrics and artefacts
EXIT_DRAIN_SECONDS = 2.0  # after a SIGTERM or an error: the pod has gracePeriodSeconds + 5 s in all
BACKOFF_INITIAL_SECONDS, BACKOFF_MAX_SECONDS = 1.0, 30.0
# The MLflow client's own retries and timeout would multiply ours (7 retries of a refused connection take
# minutes); its URL print would mix into stdout, which holds the summary; its telemetry would call out of a pod.
_CLIENT_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
_CLIENT_FORCED = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class Api(Protocol):
    """What the tracker needs of an MLflow server (plain values in and out)."""

    def experiment_id(self, name: str) -> str: ...
    def find_run(self, experiment_id: str, key: str) -> tuple[str, dict[str, str]] | None: ...
    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str: ...
    def reopen(self, run_id: str) -> None: ...
    def log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] = ...,
        step: int = ...,
        params: Mapping[str, str] = ...,
        tags: Mapping[str, str] = ...,
    ) -> None: ...
    def log_files(self, run_id: str, files: Mapping[str, bytes]) -> None: ...
    def terminate(self, run_id: str, status: str) -> None: ...


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    experiment_id: str
    uri: str


# --- the tracker ----------------------------------------------------------------------------------------------

_Op = tuple[str, Callable[[Api, str], None]]


class Tracker:
    """The one tracking object of a run: a no-op without a plan (tracking off, or not rank 0). The main thread
    calls ``epoch``/``finish`` and ``with tracker:``; the MLflow calls run on its thread (see the module doc)."""

    def __init__(
        self,
        plan: Plan | None,
        api: Callable[[str], Api] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        backoff: tuple[float, float] = (BACKOFF_INITIAL_SECONDS, BACKOFF_MAX_SECONDS),
    ) -> None:
        self.plan = plan
        self._api_of = api or MlflowApi.connect
        self._clock = clock
        self._backoff = backoff
        self._ops: deque[_Op] = deque()
        self._cv = threading.Condition()
        self._closing = False
        self._gave_up = False
        self._warned = False
        self._down_since: float | None = None  # when the current outage began
        self._attempts = 0  # failed calls in the current outage
        self._thread: threading.Thread | None = None
        self._reported = False
        self._reporter: StatusReporter | None = None
        self.info: RunInfo | None = None  # set by the tracking thread once the MLflow run exists

    @property
    def enabled(self) -> bool:
        return self.plan is not None

    def __enter__(self) -> Tracker:
        if self.plan is not None and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="mlflow-tracking", daemon=True)
            self._thread.start()
            self._submit("open", lambda api, run_id: None)  # the run exists before the first epoch ends
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:
            self.close(CLOSE_SECONDS, "FINISHED")
        else:
            stopped = issubclass(exc_type, Preempted | KeyboardInterrupt)
            self.close(EXIT_DRAIN_SECONDS, "KILLED" if stopped else "FAILED")

    # --- what the run calls (never blocks on the network) ----------------------------------------------------

    def epoch(self, stats: EpochStats, reporter: StatusReporter) -> None:
        metrics, step = epoch_metrics(stats), stats.epoch
        self._submit(f"epoch {step} metrics", lambda api, run_id: api.log(run_id, metrics=metrics, step=step))
        self.hand_over(reporter)

    def finish(
        self,
        final: Mapping[str, float | int | str],
        files: Mapping[str, bytes],
        *,
        epoch: int,
        reporter: StatusReporter,
    ) -> None:
        """The final metrics (``status.metrics``) and the run's artefacts (the bytes the store got)."""
        metrics, tags = split_final(final)
        self._submit(
            "final metrics", lambda api, run_id: api.log(run_id, metrics=metrics, step=epoch, tags=tags)
        )
        copies = dict(files)
        self._submit("artefacts", lambda api, run_id: api.log_files(run_id, copies))
        self.hand_over(reporter)

    def hand_over(self, reporter: StatusReporter) -> None:
        """Name the MLflow run in the TrainingRun's status once it exists (sent with the next update); the
        reporter is kept for ``close``, when a run opened late is named (the reporter closes after us)."""
        self._reporter, info = reporter, self.info
        if info is not None and not self._reported:
            reporter.tracking(run_id=info.run_id, experiment_id=info.experiment_id, uri=info.uri)
            self._reported = True

    def close(self, timeout: float, status: str = "FINISHED") -> bool:
        """Mark the run ``status`` and send what is queued, waiting at most ``timeout`` seconds; False if
        something was left unsent."""
        thread = self._thread
        if thread is None:
            return True
        self._submit(f"status {status}", lambda api, run_id: api.terminate(run_id, status))
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        thread.join(timeout)
        if self._reporter is not None:
            self.hand_over(self._reporter)
        with self._cv:
            left = len(self._ops) if not self._gave_up else 0
        if left:
            log.info(
                "MLflow tracking: %d update(s) not sent within %gs; the run goes on without them",
                left,
                timeout,
            )
        return not left and not self._gave_up

    # --- the tracking thread ---------------------------------------------------------------------------------

    def _submit(self, name: str, op: Callable[[Api, str], None]) -> None:
        with self._cv:
            if self._thread is None or self._gave_up or self._closing:
                return
            self._ops.append((name, op))
            self._cv.notify_all()

    def _loop(self) -> None:
        assert self.plan is not None
        api: Api | None = None
        while True:
            with self._cv:
                while not self._ops and not self._closing:
                    self._cv.wait()
                if not self._ops:
                    return
                name, op = self._ops[0]
            try:
                api = api or self._api_of(self.plan.uri)
                if self.info is None:
                    self.info = self._open(api)
                op(api, self.info.run_id)
            except Exception as exc:
                if not self._retry(name, exc):
                    return
                continue
            self._recovered()
            with self._cv:
                self._ops.popleft()

    def _open(self, api: Api) -> RunInfo:
        """Find the run of this training by its key tag (or start one); log the params it does not have."""
        plan = self.plan
        assert plan is not None
        experiment_id = api.experiment_id(plan.experiment)
        found = None if plan.new_run else api.find_run(experiment_id, plan.key)
        tags = {**plan.tags, RUN_KEY_TAG: plan.key}
        have: dict[str, str] = {}
        if found is None:
            run_id = api.create_run(experiment_id, plan.run_name, tags)
        else:
            (run_id, have), tags = found, {**tags, "resumed": "true"}
            api.reopen(run_id)
        # A param cannot change in MLflow: a resume with other values (more epochs) keeps them as tags.
        changed = {f"resumed.{k}": v for k, v in plan.params.items() if k in have and have[k] != v}
        new = {k: v for k, v in plan.params.items() if k not in have}
        api.log(run_id, params=new, tags={**tags, **changed})
        uri = redact_url(plan.uri)
        how = "continuing" if found else "logging to"
        log.info("MLflow tracking: %s run %s (experiment %s) at %s", how, run_id, plan.experiment, uri)
        return RunInfo(run_id=run_id, experiment_id=experiment_id, uri=uri)

    def _retry(self, name: str, exc: Exception) -> bool:
        """After a failed call: True to try it again (after a backoff), False when tracking gives up."""
        plan = self.plan
        assert plan is not None
        uri, now = redact_url(plan.uri), self._clock()
        if not is_transient(exc):
            self._warn(f"MLflow tracking at {uri} refused {name} ({oneline(exc)}); training continues")
            if self.info is None:
                return self._give_up(f"MLflow tracking off: no run at {uri}")
            with self._cv:
                self._ops.popleft()
            return True
        if self._down_since is None:
            self._down_since = now
            self._warn(
                f"MLflow tracking at {uri} unreachable ({oneline(exc)}); training continues, retrying in the "
                f"background for up to {plan.deadline_s:g}s"
            )
        down = now - self._down_since
        if self._closing or down >= plan.deadline_s:
            return self._give_up(f"MLflow tracking at {uri} gave up after {down:.0f}s unreachable")
        delay = min(self._backoff[0] * 2**self._attempts, self._backoff[1])
        self._attempts += 1
        with self._cv:
            if not self._closing:
                self._cv.wait(min(delay, plan.deadline_s - down))
        return True

    def _recovered(self) -> None:
        if self._down_since is not None:
            down = self._clock() - self._down_since
            self._down_since, self._attempts = None, 0
            log.info("MLflow tracking reachable again after %.0fs", down)

    def _warn(self, message: str) -> None:
        """The first problem is a warning line; later ones are info lines (warn once)."""
        log.log(logging.INFO if self._warned else logging.WARNING, message)
        self._warned = True

    def _give_up(self, message: str) -> bool:
        with self._cv:
            dropped = len(self._ops)
            self._gave_up = True
            self._ops.clear()
            self._cv.notify_all()
        log.info("%s; %d queued update(s) dropped", message, dropped)
        return False


def start_tracking(
    spec: TrainingRunSpec, run_name: str, checkpoint_uri: str, *, resume: str, main: bool
) -> Tracker:
    """The run's tracker (started by ``with``); a no-op unless the spec asks for tracking and this is rank 0.
    The MLflow client is imported from now on, in the background, while the data loads: a run stopped soon
    after its first epoch has then had the time to open its MLflow run and send that epoch."""
    check(spec)
    plan = (
        plan_of(spec, run_name, checkpoint_uri, new_run=resume == "never", environ=os.environ)
        if main
        else None
    )
    if plan is not None:
        threading.Thread(target=_warm_up, name="mlflow-import", daemon=True).start()
    return Tracker(plan)


def _warm_up() -> None:
    with contextlib.suppress(Exception):  # the tracking thread imports it again and reports the error
        _import_client()


def _import_client() -> Any:
    """``MlflowClient``, with its environment defaults set and its own (non-JSON) log lines silenced."""
    for key, value in _CLIENT_DEFAULTS.items():
        os.environ.setdefault(key, value)
    os.environ.update(_CLIENT_FORCED)
    from mlflow.tracking import MlflowClient  # lazy: only a run that tracks pays for the import

    # Every error that matters reaches the tracker as an exception.
    logging.getLogger("mlflow").setLevel(logging.CRITICAL)
    return MlflowClient


# --- the real MLflow client -----------------------------------------------------------------------------------


class MlflowApi:
    """``Api`` on ``mlflow.tracking.MlflowClient`` (mlflow-skinny is enough)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def connect(cls, uri: str) -> MlflowApi:
        return cls(_import_client()(tracking_uri=uri))

    def experiment_id(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            try:
                return str(self.client.create_experiment(name))
            except Exception:  # created meanwhile by another run
                exp = self.client.get_experiment_by_name(name)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"experiment {name!r} is deleted: restore it in MLflow or choose another")
        return str(exp.experiment_id)

    def find_run(self, experiment_id: str, key: str) -> tuple[str, dict[str, str]] | None:
        runs = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{RUN_KEY_TAG}` = '{key}'",
            max_results=1,
            order_by=["attributes.start_time DESC"],
        )
        return (runs[0].info.run_id, dict(runs[0].data.params)) if runs else None

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        return str(self.client.create_run(experiment_id, tags=tags, run_name=name).info.run_id)

    def reopen(self, run_id: str) -> None:
        self.client.update_run(run_id, status="RUNNING")

    def log(
        self,
        run_id: str,
        *,
        metrics: Mapping[str, float] = {},
        step: int = 0,
        params: Mapping[str, str] = {},
        tags: Mapping[str, str] = {},
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        stamp = int(time.time() * 1000)
        ms = [Metric(k, float(v), stamp, step) for k, v in metrics.items()]
        ps = [Param(k, v) for k, v in params.items()]
        ts = [RunTag(k, v) for k, v in tags.items()]
        for i in range(0, max(len(ms), len(ps), len(ts), 1), 100):  # MLflow takes 100 params/tags per batch
            self.client.log_batch(
                run_id, metrics=ms[i : i + 100], params=ps[i : i + 100], tags=ts[i : i + 100]
            )

    def log_files(self, run_id: str, files: Mapping[str, bytes]) -> None:
        with tempfile.TemporaryDirectory(prefix="mlflow-artefacts-") as tmp:
            for name, data in files.items():
                Path(tmp, name).write_bytes(data)
            self.client.log_artifacts(run_id, tmp)

    def terminate(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status=status)
