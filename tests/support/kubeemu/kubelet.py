"""A toy kubelet + Job controller for end-to-end tests against the emulator (never a real cluster).

The emulator stores Jobs but nothing runs them. This harness polls batch/v1 Jobs, creates a Pod object per
attempt (``<job>-<random>``, job labels, ownerReference), runs the first container's command+args as a
local subprocess with the container's env (secretKeyRef/configMapKeyRef/fieldRef resolved through the
API), writes Pod phases and Job status (active/succeeded/failed, Complete/Failed/Suspended conditions)
back, retries up to ``backoffLimit``, honours ``suspend`` and ``activeDeadlineSeconds``, and lets tests
SIGKILL a pod's process to exercise retries and checkpoint resumption.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import pathlib
import random
import signal
import string
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.support.procs import stop_process

from .client import Api, ApiResponseError


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class _Run:
    pod: str
    namespace: str
    job_uid: str
    process: subprocess.Popen[bytes]
    log: pathlib.Path
    started: float = field(default_factory=time.monotonic)
    killed: bool = False


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
                run.process.kill()
            run.process.wait()

    def kill(self, pod: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a running pod's process (SIGKILL: the pod fails with exit code 137)."""
        with self._lock:
            run = self.runs[pod]
            run.killed = True
            run.process.send_signal(sig)

    def running_pods(self, job: str | None = None) -> list[str]:
        with self._lock:
            return [name for name in self.runs if job is None or name.startswith(f"{job}-")]

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
        for pod, run in list(self.runs.items()):
            job = jobs.get(run.job_uid)
            if job is None:  # the Job was deleted: stop its process
                self._terminate(run)
                self._forget(pod)
            elif run.process.poll() is not None:
                self._finish(job, run)
        for job in jobs.values():
            self._sync(job)

    def _sync(self, job: dict[str, Any]) -> None:
        meta, spec, status = job["metadata"], job["spec"], job.get("status") or {}
        done = any(
            c["type"] in ("Complete", "Failed") and c["status"] == "True"
            for c in status.get("conditions", [])
        )
        active = [run for run in self.runs.values() if run.job_uid == meta["uid"]]
        if done or meta.get("deletionTimestamp"):
            return
        if spec.get("suspend"):
            for run in active:
                self._terminate(run)
                self.api.ok("DELETE", f"/api/v1/namespaces/{run.namespace}/pods/{run.pod}")
                self._forget(run.pod)
            if not self._condition(status, "Suspended"):
                self._job_status(
                    job, active=0, condition=("Suspended", "True", "JobSuspended", "Job suspended")
                )
            return
        if self._condition(status, "Suspended"):
            self._job_status(job, condition=("Suspended", "False", "JobResumed", "Job resumed"))
            return
        deadline = spec.get("activeDeadlineSeconds")
        if (
            deadline
            and status.get("startTime")
            and active
            and time.monotonic() - active[0].started > deadline
        ):
            for run in active:
                self._terminate(run)
                self._forget(run.pod)
            self._job_status(
                job,
                active=0,
                failed=status.get("failed", 0) + 1,
                condition=(
                    "Failed",
                    "True",
                    "DeadlineExceeded",
                    "Job was active longer than specified deadline",
                ),
            )
            return
        if not active:
            self._start(job)

    @staticmethod
    def _condition(status: dict[str, Any], kind: str) -> bool:
        return any(c["type"] == kind and c["status"] == "True" for c in status.get("conditions", []))

    def _job_status(
        self, job: dict[str, Any], condition: tuple[str, str, str, str] | None = None, **counters: Any
    ) -> None:
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

    def _env(self, namespace: str, pod: str, container: dict[str, Any]) -> dict[str, str]:
        env = {**self.extra_env}
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
                env[var["name"]] = {"metadata.name": pod, "metadata.namespace": namespace}.get(
                    source["fieldRef"]["fieldPath"], ""
                )
        return env

    def _start(self, job: dict[str, Any]) -> None:
        meta, template = job["metadata"], job["spec"]["template"]
        namespace = meta["namespace"]
        pod = f"{meta['name']}-{''.join(random.choices(string.ascii_lowercase + string.digits, k=5))}"
        labels = {
            **(template.get("metadata", {}).get("labels") or {}),
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
        self.api.create(
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "metadata": {"name": pod, "labels": labels, "ownerReferences": [owner]},
                "spec": template["spec"],
            },
        )
        container = template["spec"]["containers"][0]
        pod_path = f"/api/v1/namespaces/{namespace}/pods/{pod}/status"
        try:
            env = self._env(namespace, pod, container)
        except RuntimeError as exc:
            self.api.merge(
                pod_path,
                {"status": {"phase": "Pending", "reason": "CreateContainerConfigError", "message": str(exc)}},
            )
            raise
        log = self.workdir / f"{pod}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [*container.get("command", []), *container.get("args", [])],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=container.get("workingDir"),
            )
        with self._lock:
            self.runs[pod] = _Run(pod, namespace, meta["uid"], process, log)
        self.api.merge(
            pod_path,
            {
                "status": {
                    "phase": "Running",
                    "startTime": _now(),
                    "containerStatuses": [
                        {
                            "name": container["name"],
                            "ready": True,
                            "restartCount": 0,
                            "image": container.get("image", ""),
                            "state": {"running": {"startedAt": _now()}},
                        }
                    ],
                }
            },
        )
        status = job.get("status") or {}
        self._job_status(job, active=1, startTime=status.get("startTime") or _now())

    def _finish(self, job: dict[str, Any], run: _Run) -> None:
        code = run.process.returncode
        exit_code = 128 - code if code < 0 else code
        phase = "Succeeded" if code == 0 else "Failed"
        reason = "Completed" if code == 0 else "Error"
        self._forget(run.pod)
        with contextlib.suppress(ApiResponseError):  # the pod may be gone already
            self.api.merge(
                f"/api/v1/namespaces/{run.namespace}/pods/{run.pod}/status",
                {
                    "status": {
                        "phase": phase,
                        "containerStatuses": [
                            {
                                "name": "main",
                                "ready": False,
                                "restartCount": 0,
                                "state": {
                                    "terminated": {
                                        "exitCode": exit_code,
                                        "reason": reason,
                                        "finishedAt": _now(),
                                    }
                                },
                            }
                        ],
                    }
                },
            )
        status = job.get("status") or {}
        if code == 0:
            self._job_status(
                job,
                active=0,
                succeeded=status.get("succeeded", 0) + 1,
                completionTime=_now(),
                condition=("Complete", "True", "Completed", "Job completed"),
            )
            return
        failed = status.get("failed", 0) + 1
        if failed > job["spec"].get("backoffLimit", 6):
            self._job_status(
                job,
                active=0,
                failed=failed,
                condition=(
                    "Failed",
                    "True",
                    "BackoffLimitExceeded",
                    "Job has reached the specified backoff limit",
                ),
            )
        else:
            self._job_status(job, active=0, failed=failed)

    def _terminate(self, run: _Run) -> None:
        stop_process(run.process, timeout=10)

    def _forget(self, pod: str) -> None:
        with self._lock:
            self.runs.pop(pod, None)


def default_env() -> dict[str, str]:
    """What a test usually passes as ``extra_env``: this interpreter's PATH and PYTHONPATH."""
    return {key: os.environ[key] for key in ("PATH", "PYTHONPATH", "HOME") if key in os.environ}
