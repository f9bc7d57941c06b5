"""The operator's Kubernetes API access: the ``kubernetes`` package's typed clients, made once at start-up.

Why a class and not module globals: ``Kube.connect()`` runs in the kopf startup handler, the instance lives in
kopf's ``memo`` (see ``runtime``) and is handed to whatever needs the API, so tests and a second operator in
one process can each have their own. The typed APIs (``BatchV1Api``, ``CoreV1Api``, ``RbacAuthorizationV1Api``,
``CustomObjectsApi``) build the paths; answers are read as the API server's JSON (``_preload_content=False``)
because the pure condition logic and kopf's indexes see exactly that shape -- a round trip through the model
classes would rewrite every timestamp (``Z`` -> ``+00:00``) and make the status flap between the two.

API failures become kopf's errors in one place: a rejected object (400/422) is permanent, everything else
(5xx, 429, 403 quota, connection errors) is retried after a delay."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from trainer.api.spec import API_GROUP, API_VERSION, PLURAL

TIMEOUT = (5.0, 30.0)  # connect, read
# 400/422: the object itself is wrong; retrying the same request cannot help.
PERMANENT_STATUSES = frozenset({400, 422})
MERGE_PATCH = "application/merge-patch+json"
EVENT_COMPONENT = "trainingrun-operator"
MAX_EVENT_MESSAGE = 1024

Json = dict[str, Any]


def to_kopf_error(exc: Exception, what: str) -> kopf.PermanentError | kopf.TemporaryError:
    """API failures as kopf errors: a rejected object is permanent, everything else is retried."""
    if isinstance(exc, ApiException):
        detail = _message(exc)
        if exc.status in PERMANENT_STATUSES:
            return kopf.PermanentError(f"{what}: the API server rejected it ({exc.status}): {detail}")
        return kopf.TemporaryError(f"{what}: {exc.status} {detail}", delay=10 if exc.status != 429 else 30)
    return kopf.TemporaryError(f"{what}: {type(exc).__name__}: {exc}", delay=10)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)


def _json(response: Any) -> Json:
    """The body of an urllib3 response (``_preload_content=False``) as JSON; the connection goes back to the
    pool."""
    try:
        data = response.data
    finally:
        release = getattr(response, "release_conn", None)
        if release is not None:
            release()
    return dict(json.loads(data)) if data else {}


def _or_none(call: Callable[[], Any]) -> Json | None:
    """The answer as JSON, or None for 404 (gone, or not created yet)."""
    try:
        return _json(call())
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


class Kube:
    """The typed API clients of one operator process (thread-safe: urllib3 pools; handlers offload to threads)."""

    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client
        self.batch = client.BatchV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self._opts: dict[str, Any] = {"_preload_content": False, "_request_timeout": TIMEOUT}
        # kind -> (create(namespace, body), read(name, namespace), delete(name, namespace, body))
        self._kinds: dict[str, tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]] = {
            "Job": (
                self.batch.create_namespaced_job,
                self.batch.read_namespaced_job,
                self.batch.delete_namespaced_job,
            ),
            "Pod": (
                self.core.create_namespaced_pod,
                self.core.read_namespaced_pod,
                self.core.delete_namespaced_pod,
            ),
            "Service": (
                self.core.create_namespaced_service,
                self.core.read_namespaced_service,
                self.core.delete_namespaced_service,
            ),
            "PersistentVolumeClaim": (
                self.core.create_namespaced_persistent_volume_claim,
                self.core.read_namespaced_persistent_volume_claim,
                self.core.delete_namespaced_persistent_volume_claim,
            ),
            "ServiceAccount": (
                self.core.create_namespaced_service_account,
                self.core.read_namespaced_service_account,
                self.core.delete_namespaced_service_account,
            ),
            "Role": (
                self.rbac.create_namespaced_role,
                self.rbac.read_namespaced_role,
                self.rbac.delete_namespaced_role,
            ),
            "RoleBinding": (
                self.rbac.create_namespaced_role_binding,
                self.rbac.read_namespaced_role_binding,
                self.rbac.delete_namespaced_role_binding,
            ),
        }

    @classmethod
    def connect(cls, pool_size: int = 32) -> Kube:
        """In-cluster credentials, else ``$KUBECONFIG`` (a real cluster or the test emulator); no global state."""
        cfg = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException:
            config.load_kube_config(
                config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg
            )
        cfg.connection_pool_maxsize = pool_size
        return cls(client.ApiClient(cfg))

    def close(self) -> None:
        self.api_client.close()

    # --- TrainingRuns ---------------------------------------------------------------------------------------

    def read_run(self, namespace: str, name: str) -> Json | None:
        return _or_none(
            lambda: self.custom.get_namespaced_custom_object(
                API_GROUP, API_VERSION, namespace, PLURAL, name, **self._opts
            )
        )

    def patch_run_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Json | None:
        """Merge-patch ``status``; None when the run is gone."""
        return _or_none(
            lambda: self.custom.patch_namespaced_custom_object_status(
                API_GROUP,
                API_VERSION,
                namespace,
                PLURAL,
                name,
                {"status": dict(status)},
                _content_type=MERGE_PATCH,
                **self._opts,
            )
        )

    # --- children -------------------------------------------------------------------------------------------

    def read(self, kind: str, namespace: str, name: str) -> Json | None:
        read = self._kinds[kind][1]
        return _or_none(lambda: read(name, namespace, **self._opts))

    def create(self, obj: Mapping[str, Any]) -> tuple[Json, bool]:
        """Create, or return the existing object of that name (409); ``(object, created)``."""
        kind, meta = str(obj["kind"]), obj["metadata"]
        create = self._kinds[kind][0]
        try:
            return _json(create(meta["namespace"], dict(obj), **self._opts)), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.read(kind, meta["namespace"], meta["name"])
        if existing is None:  # deleted between the 409 and the GET: let kopf retry
            raise kopf.TemporaryError(f"{kind} {meta['name']} is being deleted", delay=2)
        return existing, False

    def delete(self, kind: str, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete in the background (dependents too); False when it was already gone. With ``uid``: only that
        object (a precondition), never a newer one of the same name -- False when the name is another's now."""
        delete = self._kinds[kind][2]
        body: Json = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            return _or_none(lambda: delete(name, namespace, body=body, **self._opts)) is not None
        except ApiException as exc:
            if uid and exc.status == 409:
                return False
            raise

    def patch_job(self, namespace: str, name: str, patch: Mapping[str, Any]) -> Json | None:
        """Merge-patch a Job; None when there is no such Job."""
        return _or_none(
            lambda: self.batch.patch_namespaced_job(
                name, namespace, dict(patch), _content_type=MERGE_PATCH, **self._opts
            )
        )

    def list_pods(self, namespace: str, selector: str) -> list[Json]:
        answer = _json(self.core.list_namespaced_pod(namespace, label_selector=selector, **self._opts))
        return list(answer.get("items") or [])

    # --- Events ---------------------------------------------------------------------------------------------

    def post_event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        """A core/v1 Event about ``obj`` from the ``trainingrun-operator`` component (``kubectl describe``'s
        From column), posted through the typed client."""
        meta = obj.get("metadata") or {}
        namespace = str(meta.get("namespace") or "default")
        if len(message) > MAX_EVENT_MESSAGE:
            half = MAX_EVENT_MESSAGE // 2 - 2
            message = f"{message[:half]}...{message[-half:]}"
        now = datetime.now(timezone.utc)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": namespace},
            "involvedObject": {
                k: v
                for k, v in (
                    ("apiVersion", obj.get("apiVersion")),
                    ("kind", obj.get("kind")),
                    ("name", meta.get("name")),
                    ("namespace", namespace),
                    ("uid", meta.get("uid")),
                    ("resourceVersion", meta.get("resourceVersion")),
                )
                if v
            },
            "type": type_,
            "reason": reason,
            "message": message,
            "action": reason,
            "source": {"component": EVENT_COMPONENT},
            "reportingComponent": EVENT_COMPONENT,
            "reportingInstance": instance_name(),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "eventTime": now.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "count": 1,
        }
        self.core.create_namespaced_event(namespace, event, **self._opts)


def instance_name() -> str:
    """This operator replica (the pod's name in a cluster)."""
    return os.environ.get("POD_NAME") or socket.gethostname()
