"""The Kubernetes API as ``python -m trainop submit | logs | wait | list`` uses it: kubectl's kubeconfig rules, the
run's create/read/list/watch, its pods and the trainer container's log.

Why like this: the same cluster a user's kubectl talks to (``--kubeconfig``, else ``$KUBECONFIG`` -- a list,
merged --, else ``~/.kube/config``, else the pod's service account in a cluster; the context's namespace unless
``--namespace``), through the ``kubernetes`` client's typed APIs -- not the operator's ``Kube``, which brings
kopf and its seconds of imports to every command. Following what comes out of here is ``client_stream``'s.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from trainer.api.spec import API_GROUP, API_VERSION, PLURAL

from .conditions import TRAINER_CONTAINER

Json = dict[str, Any]
#: The label the operator puts on a run's pods (``trainop.builders.RUN_LABEL``; a test checks they agree):
#: spelt here so that a client command does not import kopf (seconds at every start).
RUN_LABEL = f"{API_GROUP}/run"
TIMEOUT = (5.0, 30.0)  # connect, read (a single request)
SA_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_SECONDS = 60  # each run watch asks the server to end after this; it is then re-listed
LOG_TIMEOUT = (5.0, 300.0)  # connect, read: a silent trainer (evaluation) reconnects, skipping what was sent


class ClusterError(Exception):
    """No way to reach the cluster (no kubeconfig, a bad context, the API unreachable): one readable line."""


def kubeconfig_path(flag: str | None, environ: Mapping[str, str], home: Path) -> str | None:
    """kubectl's choice: ``--kubeconfig``, else ``$KUBECONFIG`` (``:``-separated; any file that exists), else
    ``~/.kube/config`` when it exists; None: in-cluster (or nothing)."""
    if flag:
        return flag
    listed = environ.get("KUBECONFIG")
    if listed:
        existing = [p for p in listed.split(os.pathsep) if p and Path(p).expanduser().exists()]
        return listed if existing else None
    default = home / ".kube" / "config"
    return str(default) if default.exists() else None


def _json(response: Any) -> Json:
    """An urllib3 response (``_preload_content=False``) as the API server's JSON."""
    try:
        return dict(json.loads(response.data))
    finally:
        response.release_conn()


@dataclass
class Cluster:
    """One cluster's clients and the namespace commands use when none is given. Pods are read as the API
    server's JSON (``_preload_content=False``), with their labels and annotations as written."""

    api_client: client.ApiClient
    namespace: str
    server: str

    def __post_init__(self) -> None:
        self.custom = client.CustomObjectsApi(self.api_client)
        self.core = client.CoreV1Api(self.api_client)

    @classmethod
    def connect(cls, kubeconfig: str | None = None, context: str | None = None) -> Cluster:
        cfg = client.Configuration()
        path = kubeconfig_path(kubeconfig, os.environ, Path.home())
        try:
            if path is not None:
                config.load_kube_config(
                    config_file=path, context=context, client_configuration=cfg, persist_config=False
                )
                contexts, current = config.list_kube_config_contexts(path)
                active = next((c for c in contexts if c["name"] == context), current) if context else current
                namespace = str((active or {}).get("context", {}).get("namespace") or "default")
            elif os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
                namespace = SA_NAMESPACE.read_text().strip() if SA_NAMESPACE.exists() else "default"
            else:
                raise ClusterError(
                    "no kubeconfig: set KUBECONFIG or --kubeconfig, or create ~/.kube/config "
                    "(kubectl's rules; in a pod the service account is used)"
                )
        except (ConfigException, OSError, ValueError) as exc:
            raise ClusterError(f"kubeconfig {path or '(in-cluster)'}: {exc}") from None
        return cls(client.ApiClient(cfg), namespace, str(cfg.host))

    # --- runs -----------------------------------------------------------------------------------------

    def get_run(self, namespace: str, name: str) -> Json | None:
        """The run, or None when there is none of that name."""
        try:
            return dict(
                self.custom.get_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, name, _request_timeout=TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create_run(self, namespace: str, body: Mapping[str, Any]) -> tuple[Json, bool]:
        """Create, or return the existing run of that name: ``(run, created)``."""
        try:
            created = self.custom.create_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, dict(body), _request_timeout=TIMEOUT
            )
            return dict(created), True
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(self._no_crd()) from None
            if exc.status != 409:
                raise
        existing = self.get_run(namespace, str(body["metadata"]["name"]))
        if existing is None:  # deleted between the 409 and the read
            raise ClusterError(f"{body['metadata']['name']} exists but is being deleted; submit again")
        return existing, False

    def list_runs(self, namespace: str | None) -> list[Json]:
        custom, opts = self.custom, {"_request_timeout": TIMEOUT}
        try:
            if namespace is None:
                answer = custom.list_cluster_custom_object(API_GROUP, API_VERSION, PLURAL, **opts)
            else:
                answer = custom.list_namespaced_custom_object(
                    API_GROUP, API_VERSION, namespace, PLURAL, **opts
                )
        except ApiException as exc:
            if exc.status == 404:
                raise ClusterError(self._no_crd()) from None
            raise
        return list(answer.get("items") or [])

    def _no_crd(self) -> str:
        return (
            f"the API server at {self.server} serves no {PLURAL}.{API_GROUP}/{API_VERSION}: install the CRD "
            "(kubectl apply -f manifests/crd.yaml, or the Helm chart)"
        )

    def watch_run(self, namespace: str, name: str, stop: threading.Event) -> Iterator[Json | None]:
        """The run now and every change after (None once it is deleted); re-reads it after each expiry."""
        while not stop.is_set():
            obj = self.get_run(namespace, name)
            yield obj
            if obj is None:
                return
            w = watch.Watch()
            for event in w.stream(
                self.custom.list_namespaced_custom_object,
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
                field_selector=f"metadata.name={name}",
                resource_version=obj["metadata"].get("resourceVersion"),
                timeout_seconds=WATCH_SECONDS,
                _request_timeout=(LOG_TIMEOUT[0], WATCH_SECONDS + 15),
            ):
                if stop.is_set():
                    w.stop()
                    return
                if event["type"] == "DELETED":
                    yield None
                    return
                if event["type"] in ("ADDED", "MODIFIED"):
                    yield dict(event["object"])

    # --- pods -----------------------------------------------------------------------------------------

    def run_pods(self, namespace: str, name: str) -> list[Json]:
        answer = self.core.list_namespaced_pod(
            namespace, label_selector=f"{RUN_LABEL}={name}", _preload_content=False, _request_timeout=TIMEOUT
        )
        return list(_json(answer).get("items") or [])

    def get_pod(self, namespace: str, name: str) -> Json | None:
        try:
            return _json(
                self.core.read_namespaced_pod(
                    name, namespace, _preload_content=False, _request_timeout=TIMEOUT
                )
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def pod_log(self, namespace: str, pod: Mapping[str, Any], follow: bool) -> Iterator[str]:
        """The trainer container's log, line by line (``follow``: until the container ends)."""
        names = [c.get("name") for c in (pod.get("spec") or {}).get("containers") or []]
        response = self.core.read_namespaced_pod_log(
            pod["metadata"]["name"],
            namespace,
            container=TRAINER_CONTAINER if TRAINER_CONTAINER in names else None,
            follow=follow,
            _preload_content=False,
            _request_timeout=LOG_TIMEOUT,
        )
        try:
            yield from lines(response.stream(amt=None, decode_content=True))
        finally:
            response.release_conn()


def lines(chunks: Iterable[bytes | str]) -> Iterator[str]:
    """Chunks of a stream as lines without their newline, the last one even without a newline."""
    buffer = b""
    for chunk in chunks:
        buffer += chunk.encode() if isinstance(chunk, str) else chunk
        *complete, buffer = buffer.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace")
    if buffer:
        yield buffer.decode("utf-8", errors="replace")


def api_error(exc: BaseException) -> str:
    """An API failure as one line (the server's message, never a credential)."""
    if isinstance(exc, ApiException):
        try:
            message = json.loads(exc.body or "{}").get("message") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        return f"the API server answered {exc.status}: {message}"
    return f"cannot reach the Kubernetes API: {type(exc).__name__}: {exc}"
