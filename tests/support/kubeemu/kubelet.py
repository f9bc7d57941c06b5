"""A toy kubelet + Job controller for end-to-end tests against the emulator (never a real cluster).

The emulator stores Jobs but nothing runs them. This harness polls batch/v1 Jobs, creates a Pod object per
attempt (``<job>-<random>``, job labels, ownerReference), runs the first container's command+args as a
local subprocess with the container's env (secretKeyRef/configMapKeyRef/fieldRef resolved through the
API), writes Pod phases and Job status (active/succeeded/failed, Complete/Failed/Suspended conditions)
back, retries up to ``backoffLimit``, honours ``suspend`` and ``activeDeadlineSeconds``, and lets tests
SIGKILL a pod's process to exercise retries and checkpoint resumption.

Indexed Jobs (``completionMode: Indexed``, see ``indexed``) get a pod ``<job>-<index>-<random>`` for each
index neither succeeded, failed nor running, lowest first, at most ``parallelism`` at once (as indexes
succeed, the next ones start), with the ``batch.kubernetes.io/job-completion-index`` annotation and label,
``spec.hostname: <job>-<index>`` and ``JOB_COMPLETION_INDEX`` in the env. The Job status gets
``completedIndexes``/``succeeded`` (succeeded indexes), and Complete once every index succeeded. A failed pod
within ``backoffLimit`` is replaced for its index only; past it the Job fails: its other pods are terminated
(SIGTERM, SIGKILL after a grace), recorded Failed with their exit codes and counted in ``failed``.

``backoffLimitPerIndex`` (Kubernetes 1.29+; ``backoffLimit`` is then not used): each index is retried alone,
up to that many times (its failure counts go on its pods as ``batch.kubernetes.io/job-index-failure-count``
and ``...-ignored-failure-count``); an index past it is failed, listed in ``status.failedIndexes`` (same
format as ``completedIndexes``, ``""`` while none) and gets no more pods. More failed indexes than
``maxFailedIndexes``: the Job fails (``MaxFailedIndexesExceeded``), its running pods terminated as above.
Every index succeeded or failed and some failed: the Job fails (``FailedIndexes``). ``failed`` counts pods.

``podFailurePolicy``: the first rule whose ``onExitCodes`` (``In``/``NotIn``, optional ``containerName``;
exit code 0 never matches) matches a failed pod decides: ``FailJob`` fails the Job at once (reason
``PodFailurePolicy``, the real controller's message "Container <c> for pod <ns>/<pod> failed with exit code
<n> matching FailJob rule at index <i>"), its other pods terminated; ``FailIndex`` (with
``backoffLimitPerIndex`` only) fails the pod's index at once; ``Ignore``: the failure is not counted
(neither in ``failed`` nor against a limit) and the pod is replaced; ``Count`` (and no match): as without a
policy. ``onPodConditions`` rules never match: this kubelet causes no disruptions (no DisruptionTarget).

DNS test shim (``hostnames``): the emulator has no DNS and every pod is a process on 127.0.0.1, whereas a real
cluster resolves ``<hostname>.<subdomain>[.<ns>[.svc[.cluster.local]]]`` through the headless Service's
per-pod records. torch's TCPStore/gloo resolve in C++, so for a template with a ``subdomain`` the kubelet
rewrites those names in the container's command, args and env values to ``127.0.0.1`` (ports kept).

PersistentVolumeClaim test shim (``volumes``): each claim a pod mounts is a local directory
``<workdir>/pvs/<namespace>/<claim>`` kept across pods; env values at, under or above a claim's mountPath are
rewritten to the pod's mount tree (``<workdir>/<pod>.mounts``, symlinks into those directories); a pod whose claim
does not exist stays Pending (Unschedulable) until it does.

Termination-message test shim: a local process cannot write a container's ``terminationMessagePath``
(default ``/dev/termination-log``). So each pod gets a file of its own, ``<workdir>/<pod>.termination-log``,
and every occurrence of that path (of ``/dev/termination-log`` when the field is absent) in the container's
env values is rewritten to the file's path (command, args and ``extra_env`` are left alone). When the process
exits, its first 4096 bytes become the container status's ``state.terminated.message``, as the kubelet does;
with ``terminationMessagePolicy: FallbackToLogsOnError``, a failed container whose file is empty gets the
tail of its log (the last 80 lines, at most 2048 bytes) instead. An empty message is left out. Product code
must read the path from an env var (``TRAINER_TERMINATION_MESSAGE_PATH``), never hard-code it.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import os
import pathlib
import random
import re
import signal
import string
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.procs import stop_process

from . import hostnames, indexed, volumes
from .client import Api, ApiResponseError

Condition = tuple[str, str, str, str]  # type, status, reason, message
COMPLETE: Condition = ("Complete", "True", "Completed", "Job completed")
BACKOFF_EXCEEDED: Condition = (
    "Failed",
    "True",
    "BackoffLimitExceeded",
    "Job has reached the specified backoff limit",
)
DEADLINE_EXCEEDED: Condition = (
    "Failed",
    "True",
    "DeadlineExceeded",
    "Job was active longer than specified deadline",
)
MAX_FAILED_INDEXES_EXCEEDED: Condition = (
    "Failed",
    "True",
    "MaxFailedIndexesExceeded",
    "Job has exceeded the specified maximal number of failed indexes",
)
FAILED_INDEXES: Condition = ("Failed", "True", "FailedIndexes", "Job has failed indexes")
#: A container's ``terminationMessagePath`` when the field is absent, and what the kubelet reads of it.
DEFAULT_TERMINATION_PATH = "/dev/termination-log"
MAX_MESSAGE_BYTES = 4096
#: ``FallbackToLogsOnError``: at most this much of the log's tail.
FALLBACK_LOG_BYTES, FALLBACK_LOG_LINES = 2048, 80
_FIELD_MAP = re.compile(r"metadata\.(annotations|labels)\['([^']*)'\]")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _suffix() -> str:
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=5))


@dataclass
class _Run:
    pod: str
    namespace: str
    job: str
    job_uid: str
    process: subprocess.Popen[bytes]
    log: pathlib.Path
    container: str  # the container's name, for its containerStatuses entry
    index: int | None = None  # the completion index of an Indexed Job's pod
    termination_log: pathlib.Path | None = None  # the termination-message shim's file
    message_policy: str = "File"  # the container's terminationMessagePolicy
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=_now)
    killed: bool = False

    def exit_code(self) -> int:
        code = self.process.wait()  # only asked once the process has ended
        return 128 - code if code < 0 else code


class Kubelet:
    """``with Kubelet(api, tmp_path, extra_env={...}) as kubelet: ...`` runs Jobs until exit."""

    def __init__(
        self,
        api: Api,
        workdir: pathlib.Path,
        extra_env: dict[str, str] | None = None,
        label_selector: str | None = None,
        namespace: str | None = None,
        interval: float = 0.2,
    ) -> None:
        self.api, self.workdir, self.extra_env = api, workdir, dict(extra_env or {})
        self.label_selector, self.namespace, self.interval = label_selector, namespace, interval
        self.runs: dict[str, _Run] = {}  # pod name -> running process
        self.errors: list[str] = []
        # backoffLimitPerIndex: (job uid, index) -> the index's counted and ignored pod failures so far
        self._index_failures: dict[tuple[str, int], tuple[int, int]] = {}
        # (job uid, index) -> the pod left Pending because a claim it mounts is missing (``volumes``)
        self._unscheduled: dict[tuple[str, int | None], str] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="kubelet", daemon=True)

    def __enter__(self) -> Kubelet:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        for run in list(self.runs.values()):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.process.pid, signal.SIGKILL)
            run.process.wait()

    def kill(self, pod: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a running pod's process (SIGKILL: the pod fails with exit code 137)."""
        with self._lock:
            run = self.runs[pod]
            run.killed = True
            if sig == signal.SIGKILL:  # the container dies: every process in it
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(run.process.pid, sig)
            else:  # the container's main process, as a kubelet signals PID 1
                run.process.send_signal(sig)

    def running_pods(self, job: str | None = None) -> list[str]:
        with self._lock:
            return [name for name in self.runs if job is None or name.startswith(f"{job}-")]

    def pods_by_index(self, job: str) -> dict[int, str]:
        """The running pods of the Indexed Job ``job``, by completion index."""
        with self._lock:
            return {
                run.index: run.pod for run in self.runs.values() if run.job == job and run.index is not None
            }

    def logs(self, pod: str) -> str:
        path = self.workdir / f"{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the loop ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # keep running; tests can assert on .errors
                self.errors.append(repr(exc))
            self._stop.wait(self.interval)

    def _jobs_path(self) -> str:
        base = f"/apis/batch/v1/namespaces/{self.namespace}/jobs" if self.namespace else "/apis/batch/v1/jobs"
        return base + (f"?labelSelector={self.label_selector}" if self.label_selector else "")

    def _tick(self) -> None:
        jobs = {job["metadata"]["uid"]: job for job in self.api.get(self._jobs_path())["items"]}
        runs = list(self.runs.values())
        self._terminate_all([run for run in runs if run.job_uid not in jobs])  # their Job was deleted
        for run in runs:
            job = jobs.get(run.job_uid)
            # a run an earlier _finish of this tick terminated is gone from self.runs already
            if job is not None and self.runs.get(run.pod) is run and run.process.poll() is not None:
                self._finish(job, run)
        for job in jobs.values():
            self._sync(job)

    def _job_runs(self, job: dict[str, Any]) -> list[_Run]:
        return [run for run in self.runs.values() if run.job_uid == job["metadata"]["uid"]]

    def _sync(self, job: dict[str, Any]) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        done = self._condition(status, "Complete") or self._condition(status, "Failed")
        if done or meta.get("deletionTimestamp"):
            return
        active = self._job_runs(job)
        if spec.get("suspend"):
            self._suspend(job, active)
        elif self._condition(status, "Suspended"):
            self._job_status(job, condition=("Suspended", "False", "JobResumed", "Job resumed"))
        elif self._deadline_exceeded(spec, status, active):
            self._terminate_all(active)
            failed = status.get("failed", 0) + len(active)
            self._job_status(job, active=0, failed=failed, condition=DEADLINE_EXCEEDED)
        elif indexed.is_indexed(spec):
            for index in indexed.to_start(
                spec, status, {run.index for run in active if run.index is not None}
            ):
                self._start(job, index)
        elif not active:
            self._start(job)

    def _suspend(self, job: dict[str, Any], active: list[_Run]) -> None:
        self._terminate_all(active)
        for run in active:
            self.api.ok("DELETE", f"/api/v1/namespaces/{run.namespace}/pods/{run.pod}")
        if not self._condition(job.get("status") or {}, "Suspended"):
            self._job_status(job, active=0, condition=("Suspended", "True", "JobSuspended", "Job suspended"))

    @staticmethod
    def _deadline_exceeded(spec: dict[str, Any], status: dict[str, Any], active: list[_Run]) -> bool:
        deadline = spec.get("activeDeadlineSeconds")
        return bool(
            deadline
            and status.get("startTime")
            and active
            and time.monotonic() - min(run.started for run in active) > deadline
        )

    @staticmethod
    def _condition(status: dict[str, Any], kind: str) -> bool:
        return any(c["type"] == kind and c["status"] == "True" for c in status.get("conditions", []))

    def _job_status(self, job: dict[str, Any], condition: Condition | None = None, **counters: Any) -> None:
        meta = job["metadata"]
        status: dict[str, Any] = dict(counters)
        if condition is not None:
            kind, value, reason, message = condition
            conditions = [c for c in (job.get("status") or {}).get("conditions", []) if c["type"] != kind]
            conditions.append(
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": _now(),
                    "lastTransitionTime": _now(),
                }
            )
            status["conditions"] = conditions
        updated = self.api.merge(
            f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}/status", {"status": status}
        )
        job["status"] = updated.get("status") or {}

    # -- pods -------------------------------------------------------------------------------------------
    def _env(self, meta: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        """The container's own env (not ``extra_env``), references resolved."""
        namespace, pod = meta["namespace"], meta["name"]
        env: dict[str, str] = {}
        for var in container.get("env") or []:
            source = var.get("valueFrom")
            if source is None:
                env[var["name"]] = str(var.get("value", ""))
            elif "secretKeyRef" in source or "configMapKeyRef" in source:
                ref = source.get("secretKeyRef") or source["configMapKeyRef"]
                kind = "secrets" if "secretKeyRef" in source else "configmaps"
                obj = self.api.maybe_get(f"/api/v1/namespaces/{namespace}/{kind}/{ref['name']}")
                data = (obj or {}).get("data") or {}
                if ref["key"] in data:
                    value = data[ref["key"]]
                    env[var["name"]] = base64.b64decode(value).decode() if kind == "secrets" else value
                elif not ref.get("optional"):
                    raise RuntimeError(f"{kind} {ref['name']!r} has no key {ref['key']!r} for pod {pod}")
            elif "fieldRef" in source:
                env[var["name"]] = _field_ref(meta, source["fieldRef"]["fieldPath"])
        return env

    def _pod(self, job: dict[str, Any], index: int | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The metadata and spec of a new pod of ``job`` (of its completion ``index`` if Indexed)."""
        meta, template = job["metadata"], job["spec"]["template"]
        template_meta = template.get("metadata") or {}
        labels = {
            **(template_meta.get("labels") or {}),
            "job-name": meta["name"],
            "controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": meta["name"],
            "batch.kubernetes.io/controller-uid": meta["uid"],
        }
        owner = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        prefix = meta["name"] if index is None else f"{meta['name']}-{index}"
        pod_meta: dict[str, Any] = {
            "name": f"{prefix}-{_suffix()}",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [owner],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = dict(template_meta["annotations"])
        spec = copy.deepcopy(template["spec"])
        if index is not None:
            failures = None
            if indexed.backoff_limit_per_index(job["spec"]) is not None:
                failures = self._index_failures.get((meta["uid"], index), (0, 0))
            indexed.stamp(pod_meta, spec, meta["name"], index, failures)
        return pod_meta, spec

    def _start(self, job: dict[str, Any], index: int | None = None) -> None:
        namespace = job["metadata"]["namespace"]
        meta, spec = self._pod(job, index)
        key = (job["metadata"]["uid"], index)
        claims = volumes.claims(spec)
        unschedulable = volumes.unavailable(self.api, namespace, claims) if claims else None
        if key in self._unscheduled:  # the pod made while its claim was missing: this one starts now
            meta["name"] = self._unscheduled[key]
        else:
            self.api.create(f"/api/v1/namespaces/{namespace}/pods", {"metadata": meta, "spec": spec})
        if unschedulable:
            if key not in self._unscheduled:
                self._unscheduled[key] = meta["name"]
                path = f"/api/v1/namespaces/{namespace}/pods/{meta['name']}/status"
                self.api.merge(path, volumes.pending_status(unschedulable))
            return
        self._unscheduled.pop(key, None)
        container = spec["containers"][0]
        pod_path = f"/api/v1/namespaces/{namespace}/pods/{meta['name']}/status"
        try:
            env = self._env(meta, container)
        except RuntimeError as exc:
            self.api.merge(
                pod_path,
                {"status": {"phase": "Pending", "reason": "CreateContainerConfigError", "message": str(exc)}},
            )
            raise
        argv = [*container.get("command", []), *container.get("args", [])]
        if subdomain := spec.get("subdomain"):  # the DNS test shim, see ``hostnames``
            argv = hostnames.rewrite_all(argv, subdomain, namespace)
            env = dict(zip(env, hostnames.rewrite_all(env.values(), subdomain, namespace), strict=True))
        # the termination-message shim: the pod's own file instead of the path the process cannot write
        termination_log = self.workdir / f"{meta['name']}.termination-log"
        termination_log.write_bytes(b"")
        target = container.get("terminationMessagePath") or DEFAULT_TERMINATION_PATH
        env = {key: value.replace(target, str(termination_log)) for key, value in env.items()}
        if claims:  # the PersistentVolumeClaim shim, see ``volumes``
            root, mount_paths = volumes.mount(self.workdir, namespace, meta["name"], spec, container)
            env = volumes.rewrite(env, root, mount_paths)
            volumes.bind(self.api, namespace, claims)
        run = self._spawn(
            job, meta["name"], container, argv, {**self.extra_env, **env}, index, termination_log
        )
        self.api.merge(
            pod_path,
            {
                "status": {
                    "phase": "Running",
                    "startTime": run.started_at,
                    "conditions": _pod_conditions(ready=True),
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "ready": True,
                            "restartCount": 0,
                            "image": container.get("image", ""),
                            "state": {"running": {"startedAt": run.started_at}},
                        }
                    ],
                }
            },
        )
        status = job.get("status") or {}
        counters: dict[str, Any] = {"startTime": status.get("startTime") or _now()}
        if indexed.backoff_limit_per_index(job["spec"]) is not None:
            counters["failedIndexes"] = status.get("failedIndexes") or ""
        self._job_status(job, active=len(self._job_runs(job)), **counters)

    def _spawn(
        self,
        job: dict[str, Any],
        pod: str,
        container: dict[str, Any],
        argv: list[str],
        env: dict[str, str],
        index: int | None,
        termination_log: pathlib.Path | None = None,
    ) -> _Run:
        log = self.workdir / f"{pod}.log"
        with open(log, "wb") as out:
            # A session of its own, like a container: a SIGKILL takes the pod's children (torchrun's workers) too.
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=container.get("workingDir"),
                start_new_session=True,
            )
        meta = job["metadata"]
        run = _Run(
            pod,
            meta["namespace"],
            meta["name"],
            meta["uid"],
            process,
            log,
            container["name"],
            index,
            termination_log,
            container.get("terminationMessagePolicy") or "File",
        )
        with self._lock:
            self.runs[pod] = run
        return run

    def _record_exit(self, run: _Run) -> None:
        """Write the ended pod's phase and its container's ``state.terminated``."""
        code = run.exit_code()
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": run.started_at,
            "finishedAt": _now(),
        }
        if message := _termination_message(run, code):
            terminated["message"] = message
        with contextlib.suppress(ApiResponseError):  # the pod may be gone already
            self.api.merge(
                f"/api/v1/namespaces/{run.namespace}/pods/{run.pod}/status",
                {
                    "status": {
                        "phase": "Succeeded" if code == 0 else "Failed",
                        "conditions": _pod_conditions(ready=False),
                        "containerStatuses": [
                            {
                                "name": run.container,
                                "ready": False,
                                "restartCount": 0,
                                "state": {"terminated": terminated},
                            }
                        ],
                    }
                },
            )

    # -- the Job controller's reaction to an ended pod --------------------------------------------------
    def _finish(self, job: dict[str, Any], run: _Run) -> None:
        self._forget(run.pod)
        self._record_exit(run)
        spec, status = job["spec"], job.get("status") or {}
        code = run.exit_code()
        if code == 0:
            if run.index is None:
                succeeded = status.get("succeeded", 0) + 1
                self._job_status(
                    job, active=0, succeeded=succeeded, completionTime=_now(), condition=COMPLETE
                )
            else:
                self._index_succeeded(job, run.index)
            return
        action, rule = failure_action(spec.get("podFailurePolicy"), run.container, code)
        per_index = indexed.backoff_limit_per_index(spec) is not None and run.index is not None
        if action == "FailIndex" and not per_index:
            action = "Count"  # the API rejects FailIndex without backoffLimitPerIndex
        if action == "FailJob":
            message = (
                f"Container {run.container} for pod {run.namespace}/{run.pod} failed with exit code {code} "
                f"matching FailJob rule at index {rule}"
            )
            self._fail(job, status.get("failed", 0) + 1, ("Failed", "True", "PodFailurePolicy", message))
            return
        if action == "Ignore":  # not counted anywhere; the next _sync replaces the pod
            if per_index:
                key = (job["metadata"]["uid"], int(run.index or 0))
                counted, ignored = self._index_failures.get(key, (0, 0))
                self._index_failures[key] = (counted, ignored + 1)
            self._job_status(job, active=len(self._job_runs(job)))
            return
        failed = status.get("failed", 0) + 1
        if per_index:
            self._index_failed(job, int(run.index or 0), failed, at_once=action == "FailIndex")
        elif failed <= spec.get("backoffLimit", 6):  # the next _sync replaces it (its index only)
            self._job_status(job, active=len(self._job_runs(job)), failed=failed)
        else:
            self._fail(job, failed, BACKOFF_EXCEEDED)

    def _fail(self, job: dict[str, Any], failed: int, condition: Condition, **counters: Any) -> None:
        """The Job fails: the controller terminates its other pods (counted as failed, ``failed`` has the rest)."""
        others = self._job_runs(job)
        self._terminate_all(others, record=True)
        self._job_status(job, active=0, failed=failed + len(others), condition=condition, **counters)

    def _index_failed(self, job: dict[str, Any], index: int, failed: int, at_once: bool) -> None:
        """A counted failure of ``index``'s pod under ``backoffLimitPerIndex`` (``at_once``: a FailIndex rule);
        ``failed``: the Job's failed pods with this one."""
        spec, status = job["spec"], job.get("status") or {}
        key = (job["metadata"]["uid"], index)
        counted, ignored = self._index_failures.get(key, (0, 0))
        self._index_failures[key] = (counted + 1, ignored)
        limit = indexed.backoff_limit_per_index(spec)
        if not at_once and limit is not None and counted + 1 <= limit:  # the next _sync retries the index
            self._job_status(job, active=len(self._job_runs(job)), failed=failed)
            return
        failed_indexes = indexed.parse(status.get("failedIndexes")) | {index}
        counters: dict[str, Any] = {"failedIndexes": indexed.format_indexes(failed_indexes)}
        done = indexed.parse(status.get("completedIndexes"))
        max_failed = spec.get("maxFailedIndexes")
        if max_failed is not None and len(failed_indexes) > int(max_failed):
            self._fail(job, failed, MAX_FAILED_INDEXES_EXCEEDED, **counters)
        elif indexed.all_finished(spec, done, failed_indexes):
            self._job_status(job, active=0, failed=failed, condition=FAILED_INDEXES, **counters)
        else:
            self._job_status(job, active=len(self._job_runs(job)), failed=failed, **counters)

    def _index_succeeded(self, job: dict[str, Any], index: int) -> None:
        status = job.get("status") or {}
        done = indexed.parse(status.get("completedIndexes")) | {index}
        failed_indexes = indexed.parse(status.get("failedIndexes"))
        counters: dict[str, Any] = {
            "active": len(self._job_runs(job)),
            "succeeded": len(done),
            "completedIndexes": indexed.format_indexes(done),
        }
        if indexed.all_succeeded(job["spec"], done):
            self._job_status(job, completionTime=_now(), condition=COMPLETE, **counters)
        elif failed_indexes and indexed.all_finished(job["spec"], done, failed_indexes):
            self._job_status(job, condition=FAILED_INDEXES, **counters)
        else:
            self._job_status(job, **counters)

    def _terminate_all(self, runs: list[_Run], record: bool = False) -> None:
        """SIGTERM the runs' processes together, SIGKILL those still alive after 10 s; ``record``: write
        their pods' Failed status with the exit codes."""
        stoppers = [threading.Thread(target=stop_process, args=(run.process, 10)) for run in runs]
        for stopper in stoppers:
            stopper.start()
        for stopper, run in zip(stoppers, runs, strict=True):
            stopper.join()
            with contextlib.suppress(ProcessLookupError):  # what the container still held goes with it
                os.killpg(run.process.pid, signal.SIGKILL)
            self._forget(run.pod)
            if record:
                self._record_exit(run)

    def _forget(self, pod: str) -> None:
        with self._lock:
            self.runs.pop(pod, None)


def failure_action(policy: dict[str, Any] | None, container: str, code: int) -> tuple[str, int | None]:
    """What a Job's ``podFailurePolicy`` does about a pod whose container ``container`` exited ``code``: the
    action of the first rule whose ``onExitCodes`` match, and that rule's index; ("Count", None) if none does.
    Exit code 0 never matches; ``onPodConditions`` rules never match here (no disruptions)."""
    for number, rule in enumerate((policy or {}).get("rules") or []):
        on_codes = rule.get("onExitCodes")
        if not on_codes or code == 0:
            continue
        name = on_codes.get("containerName")
        if name is not None and name != container:
            continue
        values = {int(value) for value in on_codes.get("values") or []}
        operator = on_codes.get("operator")
        if (operator == "In" and code in values) or (operator == "NotIn" and code not in values):
            return str(rule["action"]), number
    return "Count", None


def _termination_message(run: _Run, code: int) -> str:
    """``state.terminated.message``: the first 4096 bytes of the pod's termination-message file, or, with
    ``FallbackToLogsOnError`` after a failure and an empty file, the tail of its log."""
    data = b""
    if run.termination_log is not None:
        with contextlib.suppress(OSError), open(run.termination_log, "rb") as file:
            data = file.read(MAX_MESSAGE_BYTES)
    if not data and code != 0 and run.message_policy == "FallbackToLogsOnError":
        with contextlib.suppress(OSError), open(run.log, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - FALLBACK_LOG_BYTES))
            data = b"".join(file.read().splitlines(keepends=True)[-FALLBACK_LOG_LINES:])
    return data.decode(errors="replace")


def _field_ref(meta: dict[str, Any], path: str) -> str:
    """A pod's ``fieldRef`` value: its name, namespace, or ``metadata.annotations['k']`` / labels."""
    if match := _FIELD_MAP.fullmatch(path):
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    return str({"metadata.name": meta["name"], "metadata.namespace": meta["namespace"]}.get(path, ""))


def _pod_conditions(ready: bool) -> list[dict[str, str]]:
    now, value = _now(), "True" if ready else "False"
    return [
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
        {"type": "Initialized", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": value, "lastTransitionTime": now},
        {"type": "Ready", "status": value, "lastTransitionTime": now},
    ]


def default_env() -> dict[str, str]:
    """What a test usually passes as ``extra_env``: this interpreter's PATH and PYTHONPATH."""
    return {key: os.environ[key] for key in ("PATH", "PYTHONPATH", "HOME") if key in os.environ}


def trainer_pod_env(kubeconfig: str, **extra: str) -> dict[str, str]:
    """What the e2e tests give the trainer's pods: this interpreter and checkout, the emulator's kubeconfig (the
    trainer patches its run's status), a headless matplotlib, and ``extra``."""
    here = pathlib.Path(__file__).resolve().parents[3]
    return {
        **default_env(),
        "PATH": f"{pathlib.Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(here),
        "KUBECONFIG": kubeconfig,
        "MPLBACKEND": "Agg",
        **extra,
    }
