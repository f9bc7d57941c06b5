"""A small synchronous Kubernetes client for the handlers: raw paths in, plain dicts out.

Why not the typed ``kubernetes`` APIs: the builders produce plain dicts and the condition logic reads plain
dicts; converting to and from model classes would only lose fields the client does not know
(``podReplacementPolicy`` on older clients). This uses ``kubernetes.client.ApiClient`` for configuration, auth
and TLS, works in-cluster and with a kubeconfig (a real cluster or the test emulator), and maps API errors to
kopf's Temporary/Permanent errors."""

from __future__ import annotations

import json
import os
import threading
from typing import Any
from urllib.parse import quote

import kopf
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from trainer.spec import API_GROUP, API_VERSION, PLURAL

TIMEOUT = (5.0, 30.0)  # connect, read
_PLURALS = {
    "Job": "jobs",
    "ServiceAccount": "serviceaccounts",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Pod": "pods",
}
# 400/422: the object itself is wrong; retrying the same request cannot help.
PERMANENT_STATUSES = frozenset({400, 422})


def path(
    api_version: str, plural: str, namespace: str, name: str | None = None, sub: str | None = None
) -> str:
    prefix = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    out = f"{prefix}/namespaces/{quote(namespace)}/{plural}"
    if name:
        out += f"/{quote(name)}"
    if sub:
        out += f"/{sub}"
    return out


def run_path(namespace: str, name: str, sub: str | None = None) -> str:
    return path(f"{API_GROUP}/{API_VERSION}", PLURAL, namespace, name, sub)


def object_path(obj: dict[str, Any], with_name: bool = True) -> str:
    meta = obj["metadata"]
    return path(
        obj["apiVersion"], _PLURALS[obj["kind"]], meta["namespace"], meta["name"] if with_name else None
    )


def to_kopf_error(exc: Exception, what: str) -> kopf.PermanentError | kopf.TemporaryError:
    """API failures as kopf errors: a rejected object is permanent, everything else (5xx, 429, 403 quota,
    connection errors) is retried after a delay."""
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


class Kube:
    """Thread-safe (urllib3 pools); handlers run in kopf's thread pool."""

    def __init__(self, api_client: client.ApiClient | None = None) -> None:
        self._client = api_client
        self._lock = threading.Lock()

    @property
    def api(self) -> client.ApiClient:
        with self._lock:
            if self._client is None:
                try:
                    config.load_incluster_config()
                except ConfigException:
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
                cfg = client.Configuration.get_default_copy()
                cfg.connection_pool_maxsize = 32
                self._client = client.ApiClient(cfg)
            return self._client

    def request(
        self,
        method: str,
        url: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> dict[str, Any]:
        response = self.api.call_api(
            url,
            method,
            query_params=query or [],
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
            _preload_content=False,
            _request_timeout=TIMEOUT,
        )
        data = response.data if hasattr(response, "data") else response[0].data
        return dict(json.loads(data)) if data else {}

    def get(self, url: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", url)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create, or return the existing object of that name (409); ``(object, created)``."""
        try:
            return self.request("POST", object_path(obj, with_name=False), obj), True
        except ApiException as exc:
            if exc.status != 409:
                raise
        existing = self.get(object_path(obj))
        if existing is None:  # deleted between the 409 and the GET: let kopf retry
            raise kopf.TemporaryError(f"{obj['kind']} {obj['metadata']['name']} is being deleted", delay=2)
        return existing, False

    def merge_patch(self, url: str, patch: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return self.request("PATCH", url, patch, content_type="application/merge-patch+json")
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, url: str, propagation: str = "Background") -> bool:
        """Delete; False when it was already gone."""
        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        try:
            self.request("DELETE", url, body)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
