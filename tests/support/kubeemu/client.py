"""A tiny JSON-over-HTTP client for the emulator (the kubelet harness and the fidelity tests).

The ``kubernetes`` client deserialises into models and hides status codes and headers; these tests assert
exactly what the server answered (409 vs 422, Status bodies), and the harness needs nothing more.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any


class ApiResponseError(Exception):
    def __init__(self, code: int, body: dict[str, Any]) -> None:
        super().__init__(f"{code}: {body.get('message', body)}")
        self.code, self.body = code, body


def path_for(
    api_version: str,
    plural: str,
    namespace: str | None = None,
    name: str | None = None,
    sub: str | None = None,
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    parts = [base] + ([f"namespaces/{namespace}"] if namespace else []) + [plural]
    parts += [name] if name else []
    parts += [sub] if sub else []
    return "/".join(parts)


class Api:
    """``Api("http://127.0.0.1:port").get("/api/v1/namespaces/default/pods/p")`` -> dict, or raises."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        self.url, self.timeout = url.rstrip("/"), timeout

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": content_type, **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")

    def ok(self, method: str, path: str, body: Any = None, content_type: str = "application/json") -> Any:
        code, answer = self.call(method, path, body, content_type)
        if code >= 400:
            raise ApiResponseError(code, answer)
        return answer

    def get(self, path: str) -> Any:
        return self.ok("GET", path)

    def create(self, path: str, body: dict[str, Any]) -> Any:
        return self.ok("POST", path, body)

    def merge(self, path: str, patch: dict[str, Any]) -> Any:
        return self.ok("PATCH", path, patch, "application/merge-patch+json")

    def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.ok("DELETE", path, body)

    def maybe_get(self, path: str) -> Any:
        code, answer = self.call("GET", path)
        return None if code == 404 else answer

    def watch(self, path: str, timeout: float = 5, **params: str) -> Iterator[dict[str, Any]]:
        """Yield watch events until the server closes the stream (``timeoutSeconds``) or the caller stops."""
        query = "&".join(
            f"{k}={v}" for k, v in {"watch": "true", "timeoutSeconds": str(int(timeout)), **params}.items()
        )
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=timeout + 5) as response:
            for line in response:
                if line.strip():
                    yield json.loads(line)
