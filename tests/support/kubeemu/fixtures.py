"""Pytest fixtures for tests that need a Kubernetes API: the emulator, or a real cluster via KUBECONFIG.

Use them from a test module (or a conftest) with::

    from tests.support.kubeemu.fixtures import kube_api, kube_namespace  # noqa: F401

``kube_api`` is session-scoped: one emulator subprocess per test session. With ``KUBECONFIG`` set in the
environment it starts nothing and points at that cluster instead (``.real`` is True), so the same e2e
tests run against kind or a GPU cluster.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from .client import Api
from .server import emulator_subprocess, write_kubeconfig


@dataclass(frozen=True)
class KubeApi:
    """Where the API is: a kubeconfig path, the env vars to hand to kubectl/kopf/subprocesses, and how."""

    kubeconfig: pathlib.Path
    env: dict[str, str]
    real: bool
    url: str | None = None  # the emulator's base URL (None on a real cluster)
    #: The emulator's ``--pod-logs`` directory: a Kubelet with this workdir makes ``kubectl logs`` show its pods.
    pod_logs: pathlib.Path | None = None

    @property
    def api(self) -> Api:
        """A raw JSON client (emulator only: it sends no credentials)."""
        if self.url is None:
            raise RuntimeError("the raw client is for the emulator; use kubectl or the kubernetes client")
        return Api(self.url)

    def use_in_process(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Point this process (kopf's KopfRunner, the kubernetes client) at this API for one test.

        The kubernetes client reads ``KUBECONFIG`` once at import; setting the env var is not enough.
        """
        import kubernetes.config.kube_config

        for key, value in self.env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(
            kubernetes.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(self.kubeconfig)
        )

    def kubectl(
        self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run real kubectl against this API; returns the completed process (text).

        Imperative generators send protobuf: the emulator decodes it for ``kubectl create namespace``,
        ``configmap``, ``secret`` and ``serviceaccount`` only (``kubeemu.k8sproto``); for other kinds use
        manifests (``apply -f``/``create -f`` send JSON).
        """
        return subprocess.run(
            ["kubectl", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            input=stdin,
        )


#: A test that plays a controller a real cluster has itself (a garbage collector, the Job controller): run on the
#: emulator, deselected at collection -- visibly, with the reason -- when KUBECONFIG names a real cluster, the same
#: test ``kube_api`` makes.
emulator_only = pytest.mark.skipif(
    bool(os.environ.get("KUBECONFIG")), reason="emulator only: a real cluster runs this controller itself"
)


@pytest.fixture(scope="session")
def kube_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeApi]:
    existing = os.environ.get("KUBECONFIG")
    if existing:
        yield KubeApi(pathlib.Path(existing), {"KUBECONFIG": existing}, real=True)
        return
    tmp = tmp_path_factory.mktemp("kubeemu")
    with emulator_subprocess(tmp / "emulator.log", pod_logs=tmp / "pods") as url:
        kubeconfig = write_kubeconfig(tmp / "kubeconfig", url)
        yield KubeApi(
            kubeconfig,
            {"KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(tmp / "kube-cache")},
            real=False,
            url=url,
            pod_logs=tmp / "pods",
        )


@pytest.fixture()
def kube_namespace(kube_api: KubeApi) -> Iterator[str]:
    """A fresh namespace for one test, deleted (with everything in it) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    kube_api.kubectl(
        "create",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    yield name
    kube_api.kubectl("delete", "namespace", name, "--wait=false", check=False)
    if kube_api.real:
        deadline = time.monotonic() + 120
        while (
            time.monotonic() < deadline
            and kube_api.kubectl("get", "namespace", name, check=False).returncode == 0
        ):
            time.sleep(1)
