"""Progress reporting from the trainer to its TrainingRun's ``status`` (progress, checkpoint, tracking, metrics).

Why here and like this: ``kubectl get tr`` shows epoch and losses, the operator's stall timer and metrics read
``status.progress.lastProgressTime``, and only the trainer knows them. It patches its own TrainingRun's status
subresource (its per-run Role allows exactly ``get``/``patch`` of that one ``trainingruns/status``).

Rules: at most one patch per ``TRAINER_STATUS_THROTTLE_SECONDS`` (default 10) -- updates in between are merged
and sent with the next allowed patch -- plus the last pending update at ``final``/``close``; a failed patch is
one warning line and never an exception (training goes on); in a pod the patches go out on a background thread,
so a slow or unreachable API server never blocks an epoch; no torch import. Without ``TRAININGRUN_NAME`` (a
local run) every method is a no-op. Every update is a ``trainer.api.status.TrainingRunStatus`` (which rounds what a
person reads); ``with reporter:`` sends the last one however the run ends.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

from trainer.api.spec import API_GROUP, API_VERSION, PLURAL
from trainer.api.status import (
    CheckpointStatus,
    EpochStats,
    Metrics,
    Progress,
    TrackingStatus,
    TrainingRunStatus,
    rfc3339,
    whole,
)

log = logging.getLogger(__name__)

PatchFn = Callable[[dict[str, Any]], None]
DEFAULT_THROTTLE_SECONDS = 10.0
REQUEST_TIMEOUT = (3.0, 5.0)  # connect, read: a slow API server delays training by seconds at most
EXIT_DRAIN_SECONDS = 2.0  # the last status after a SIGTERM: the pod has gracePeriodSeconds + 5 s in all


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _merge(target: dict[str, Any], update: Mapping[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = dict(value) if isinstance(value, Mapping) else value


def _redact(text: str) -> str:
    return re.sub(
        r"(?i)(bearer\s+)\S+|(token[\"'=: ]+)\S+", lambda m: (m.group(1) or m.group(2)) + "***", text
    )


class StatusReporter:
    """Sends merged status updates through ``patch`` (a callable taking ``{"status": {...}}``), throttled."""

    def __init__(
        self,
        patch: PatchFn | None,
        *,
        throttle_seconds: float = DEFAULT_THROTTLE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        target: str = "",
    ) -> None:
        self._patch = patch
        self._throttle = max(0.0, throttle_seconds)
        self._clock = clock
        self._wall_clock = wall_clock
        self._target = target
        self._pending: dict[str, Any] = {}
        self._last_sent: float | None = None
        self._sent = 0
        self._failed = 0

    @property
    def enabled(self) -> bool:
        return self._patch is not None

    @property
    def sent(self) -> int:
        """Patches the API server accepted."""
        return self._patch.sent if isinstance(self._patch, BackgroundSender) else self._sent

    @property
    def failed(self) -> int:
        """Patches that failed (each logged as one warning line)."""
        return self._patch.failed if isinstance(self._patch, BackgroundSender) else self._failed

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StatusReporter:
        """In a pod (``TRAININGRUN_NAME`` set): report through the Kubernetes API; else a no-op reporter."""
        env = os.environ if environ is None else environ
        name = env.get("TRAININGRUN_NAME")
        if not name:
            return cls(None)
        namespace = env.get("TRAININGRUN_NAMESPACE") or _pod_namespace()
        try:
            throttle = float(env.get("TRAINER_STATUS_THROTTLE_SECONDS") or DEFAULT_THROTTLE_SECONDS)
        except ValueError:
            throttle = DEFAULT_THROTTLE_SECONDS
        try:
            patch = _kubernetes_patch(namespace, name)
        except Exception as exc:  # no config, no client: train anyway, unreported
            log.warning(
                "status reporting disabled: cannot configure the Kubernetes client: %s", _oneline(exc)
            )
            return cls(None)
        target = f"{namespace}/{name}"
        return cls(BackgroundSender(patch, target), throttle_seconds=throttle, target=target)

    def __enter__(self) -> StatusReporter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Send what is pending, also when the run ends by an exception (a SIGTERM, a NaN loss); then the
        wait is short, as the pod's grace period is mostly the checkpoint's."""
        self.close(timeout=15.0 if exc_type is None else EXIT_DRAIN_SECONDS)

    # --- what the training loop calls ---------------------------------------------------------------------

    def report(self, status: TrainingRunStatus, *, flush: bool = True) -> None:
        """Merge ``status`` (the fields set on it) into what is pending; sent now unless throttled (or
        ``flush=False``: with the next update)."""
        self._add(status.dump(), flush=flush)

    def epoch(self, stats: EpochStats, *, finished: bool) -> None:
        """The progress after an epoch; ``finished`` (the last one, or early stopping) clears the ETA."""
        self.report(TrainingRunStatus(progress=Progress.of_epoch(stats, finished=finished, now=self._now())))

    def progress(
        self,
        *,
        epoch: int,
        total_epochs: int,
        train_loss: float | None = None,
        val_loss: float | None = None,
        val_mase: float | None = None,
        best_val_loss: float | None = None,
        best_epoch: int | None = None,
        samples_per_second: float | None = None,
        eta_seconds: float | None = None,
    ) -> None:
        """``status.progress`` from its values (``epoch`` does the same from an ``EpochStats``)."""
        progress = Progress(
            epoch=epoch,
            total_epochs=total_epochs,
            epoch_display=f"{epoch}/{total_epochs}",
            train_loss=train_loss,
            val_loss=val_loss,
            val_mase=val_mase,
            best_val_loss=best_val_loss,
            best_epoch=best_epoch,
            samples_per_second=whole(samples_per_second),
            eta_seconds=eta_seconds,
            last_progress_time=rfc3339(self._now()),
        )
        self.report(TrainingRunStatus(progress=progress))

    def checkpoint(self, *, latest: str | None, best: str | None, epoch: int) -> None:
        """A *stored* checkpoint; sent with the next progress update (or at final/close), never on its own."""
        self.report(
            TrainingRunStatus(checkpoint=CheckpointStatus(latest=latest, best=best, epoch=epoch)), flush=False
        )

    def tracking(self, *, run_id: str, experiment_id: str, uri: str) -> None:
        """The MLflow run this training logs to (``trainer.tracking``); sent with the next update."""
        status = TrackingStatus(mlflow_run_id=run_id, experiment_id=experiment_id, uri=uri)
        self.report(TrainingRunStatus(tracking=status), flush=False)

    def final(self, metrics: Mapping[str, float | int | str]) -> None:
        """Final metrics (``val_mase`` or ``valMase`` keys), sent at once with anything pending."""
        parsed = Metrics.model_validate({_camel(k): v for k, v in metrics.items()})
        self.report(TrainingRunStatus(metrics=parsed), flush=False)
        self.flush()

    def close(self, timeout: float = 15.0) -> None:
        """Send what is pending and wait (at most ``timeout`` seconds) until it has gone out."""
        self.flush()
        if isinstance(self._patch, BackgroundSender):
            self._patch.drain(timeout)

    def _now(self) -> datetime:
        return self._wall_clock()

    # --- mechanics ----------------------------------------------------------------------------------------

    def _add(self, update: dict[str, Any], flush: bool = True) -> None:
        if self._patch is None:
            return
        _merge(self._pending, update)
        if flush:
            now = self._clock()
            if self._last_sent is None or now - self._last_sent >= self._throttle:
                self.flush()

    def flush(self) -> None:
        """Send what is pending now, throttle or not; never raises."""
        if self._patch is None or not self._pending:
            return
        body = {"status": self._pending}
        self._pending = {}
        self._last_sent = self._clock()
        try:
            self._patch(body)
            self._sent += 1
        except Exception as exc:
            self._failed += 1
            _warn(self._target, exc)
            # Keep the values for the next attempt (updates merged later win).
            merged = body["status"]
            _merge(merged, self._pending)
            self._pending = merged


class BackgroundSender:
    """Sends status bodies on a daemon thread: the training loop only hands a body over and never waits on
    the network. Bodies handed over while one is in flight are merged (newest values win); a failed body is
    logged and merged under the next one, or retried once by ``drain``."""

    def __init__(self, patch: PatchFn, target: str = "") -> None:
        self._patch = patch
        self._target = target
        self._pending: dict[str, Any] = {}
        self._retry: dict[str, Any] = {}
        self._busy = False
        self._closing = False
        self._cv = threading.Condition()
        self.sent = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._loop, name="status-reporter", daemon=True)
        self._thread.start()

    def __call__(self, body: dict[str, Any]) -> None:
        with self._cv:
            if self._retry:
                merged, self._retry = self._retry, {}
                _merge(merged, self._pending)
                self._pending = merged
            _merge(self._pending, body.get("status") or {})
            self._cv.notify_all()

    def drain(self, timeout: float) -> bool:
        """Send everything handed over (retrying a failed body once); False if ``timeout`` ran out."""
        deadline = time.monotonic() + timeout
        with self._cv:
            if self._retry:
                merged, self._retry = self._retry, {}
                _merge(merged, self._pending)
                self._pending = merged
            self._closing = True
            self._cv.notify_all()
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._pending:
                    self._cv.wait()
                status, self._pending = self._pending, {}
                self._busy = True
            try:
                self._patch({"status": status})
                ok = True
            except Exception as exc:
                ok = False
                _warn(self._target, exc)
            with self._cv:
                if ok:
                    self.sent += 1
                else:
                    self.failed += 1
                    if not self._closing:
                        _merge(self._retry, status)
                self._busy = False
                self._cv.notify_all()


def _warn(target: str, exc: BaseException) -> None:
    log.warning("status patch of TrainingRun %s failed (training continues): %s", target, _oneline(exc))


def _oneline(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    reason = getattr(exc, "reason", None)
    text = f"HTTP {status} {reason}" if status is not None else f"{type(exc).__name__}: {exc}"
    return _redact(" ".join(text.split()))[:300]


def _pod_namespace() -> str:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as fh:
            return fh.read().strip()
    except OSError:
        return "default"


def _kubernetes_patch(namespace: str, name: str) -> PatchFn:
    """A merge patch of ``.../trainingruns/<name>/status`` with in-cluster config, else KUBECONFIG."""
    from kubernetes import client, config  # lazy: local runs never pay for the import
    from kubernetes.config.config_exception import ConfigException

    try:
        config.load_incluster_config()
    except ConfigException:
        # Explicit: the client reads $KUBECONFIG only once, when it is first imported.
        config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
    cfg = client.Configuration.get_default_copy()
    cfg.retries = 1  # urllib3's default of 3 retries would multiply the timeouts below
    api = client.CustomObjectsApi(client.ApiClient(cfg))

    def patch(body: dict[str, Any]) -> None:
        api.patch_namespaced_custom_object_status(
            API_GROUP, API_VERSION, namespace, PLURAL, name, body, _request_timeout=REQUEST_TIMEOUT
        )

    return patch
