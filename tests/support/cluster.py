"""What the e2e and integration tests set up on a cluster (the emulator, or a real one via KUBECONFIG) before
their own steps: where checkpoints go (``Storage``) and its Secret, the operator with (on the emulator) the
kubelet harness, a CRD served, and a namespace of their own.

Why one module: every e2e test starts the same way, and a copy per test module drifted apart in small ways
(thread counts, which directory the kubelet logs to); here each difference is a parameter.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any, Protocol

import boto3
import pytest

from tests.support.kubeemu.client import Api, ApiResponseError
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.kubeemu.kubelet import Kubelet, trainer_pod_env
from tests.support.s3server import S3Server
from tests.support.waiting import wait_for

GROUP_PATH = "/apis/cryptopredictor.dev/v1alpha1"


class Storage:
    """Where the trainer's checkpoints go: the SeaweedFS fixture here, or the S3 named by E2E_* on a cluster."""

    def __init__(self, kube_api: KubeApi, request: pytest.FixtureRequest) -> None:
        if kube_api.real:
            self.endpoint = os.environ["E2E_S3_ENDPOINT"]
            self.bucket = os.environ["E2E_S3_BUCKET"]
            self.key_id, self.secret = os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"]
        else:
            s3: S3Server = request.getfixturevalue("s3_server")
            self.endpoint, self.bucket = s3.endpoint, s3.create_bucket()
            self.key_id, self.secret = s3.access_key, s3.secret_key

    def client(self) -> Any:
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret,
            region_name="us-east-1",
        )

    def keys(self, prefix: str) -> set[str]:
        listing = self.client().list_objects_v2(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"] for o in listing.get("Contents", [])}

    def secret_manifest(self, name: str = "s3-creds") -> dict[str, Any]:
        """The Secret a run's ``s3CredentialsSecret`` names, with this storage's credentials."""
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name},
            "stringData": {"AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret},
        }


class Process(Protocol):
    """What ``operator_and_kubelet`` needs of an operator (``tests.operator.test_integration.Operator``)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


def operator_and_kubelet(
    stack: ExitStack,
    kube_api: KubeApi,
    operator: Process,
    namespace: str,
    workdir: pathlib.Path,
    threads: int = 1,
) -> Kubelet | None:
    """Start ``operator`` (stopped when ``stack`` closes) and, on the emulator, a kubelet harness for
    ``namespace`` in ``workdir`` whose trainers get ``threads`` OpenMP threads; None on a real cluster."""
    operator.start()
    stack.callback(operator.stop)
    if kube_api.real:
        return None
    env = trainer_pod_env(kube_api.env["KUBECONFIG"], OMP_NUM_THREADS=str(threads))
    return stack.enter_context(Kubelet(kube_api.api, workdir, extra_env=env, namespace=namespace))


def apply_crd(kube_api: KubeApi, manifest: pathlib.Path, plural: str) -> None:
    """``kubectl apply`` a CRD and wait (on the emulator) until its resource ``plural`` is served."""
    kube_api.kubectl("apply", "-f", str(manifest))
    if not kube_api.real:
        wait_for(
            f"the {plural} CRD to be served",
            lambda: kube_api.api.maybe_get(f"{GROUP_PATH}/{plural}") is not None,
        )


@contextlib.contextmanager
def fresh_namespace(api: Api, prefix: str) -> Iterator[str]:
    """A namespace ``<prefix>-<random>`` created through the API, deleted afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    yield name
    with contextlib.suppress(ApiResponseError):
        api.delete(f"/api/v1/namespaces/{name}")
