"""The HTTP face of the emulator: kmock's KubernetesScaffold with an API-server router behind it.

Built on kmock (pinned 0.8): its Server serves us on 127.0.0.1, its request model records every request
(``emulator.requests``), its DSL reactions still take priority (``emulator['get /api/v1/pods'] << 500``
injects faults) and its scaffold renders discovery documents. What kmock's KubernetesEmulator lacked --
resourceVersions, uids, a status subresource, selectors, CRD serving, validation, Tables, GC, a fast
store, paths like ``/api/v1/namespaces`` that crash its URL parser -- lives in :mod:`.store` and here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
from collections.abc import Mapping
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import enums, parsing, references, rendering

from . import k8sproto, openapi, podlogs, tables
from .builtins import BUILTINS, VERBS, ResourceDef
from .selectors import SelectorError, field_selector, label_selector
from .store import ApiError, Store

logger = logging.getLogger(__name__)
_REQUEST_LOG = 2000  # requests kept for assertions; older ones are dropped to bound memory


def parse_path(path: str) -> parsing.ParsedPath:
    """Split a resource URL (kmock's own parser fails on ``/api/v1/namespaces``)."""
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return parsing.ParsedPath()
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    plural = rest[0] if rest else None
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return parsing.ParsedPath(group, version, plural, namespace, name, sub)


def _json(payload: Any, status: int = 200) -> aiohttp.web.Response:
    return aiohttp.web.Response(
        body=json.dumps(payload).encode(), status=status, content_type="application/json"
    )


@attrs.define(kw_only=True)
class ApiEmulator(kmock.KubernetesScaffold):
    """A Kubernetes API server good enough for kopf, the ``kubernetes`` client and kubectl."""

    store: Store = attrs.field(factory=Store, init=False)
    #: Where the kubelet harness writes ``<pod>.log`` (served as ``pods/NAME/log``); None: no logs to serve.
    pod_logs: pathlib.Path | None = None

    def __attrs_post_init__(self) -> None:
        # Deliberately not calling the scaffold's: its catch-all fallbacks are replaced by self._route().
        self.store.on_defs_changed = self._sync_discovery
        for res in BUILTINS:
            self.store.register(res)
        for name in ("default", "kube-system", "kube-public"):
            self.store.create(self.store.defs[("", "v1", "namespaces")], None, {"metadata": {"name": name}})

    def _sync_discovery(self) -> None:
        """Mirror the store's resources into kmock's ResourcesArray, which its discovery renders."""
        wanted = {
            references.resource(group=r.group, version=r.version, plural=r.plural): r
            for r in self.store.defs.values()
        }
        for known in list(self._resources):
            if known not in wanted:
                del self._resources[known]
        for key, res in wanted.items():
            self._resources[key] = references.ResourceInfo(
                namespaced=res.namespaced,
                kind=res.kind,
                singular=res.singular,
                verbs=VERBS,
                shortnames=res.shortnames,
                categories=res.categories,
                subresources={"status"} if res.status_subresource else set(),
            )

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        text = body.decode("utf-8", errors="replace")
        data: Any = None
        if body and "protobuf" not in raw.content_type:
            with contextlib.suppress(ValueError):
                data = yaml.safe_load(text) if "yaml" in raw.content_type else json.loads(text)
        k8s = parse_path(raw.path)
        method = enums.method(raw.method)
        query = dict(raw.query)
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=query,
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            body=body,
            text=text,
            data=data,
            action=parsing.guess_k8s(k8s, method, query),
            namespace=k8s.namespace,
            name=k8s.name,
            subresource=k8s.subresource,
            resource=None
            if k8s.group is None
            else references.resource(group=k8s.group, version=k8s.version, plural=k8s.plural),
        )
        self._requests.append(request)
        if len(self._requests) > _REQUEST_LOG:
            del self._requests[: _REQUEST_LOG // 2]
        try:
            if self._payloads:  # reactions injected by a test take priority
                with contextlib.suppress(NotImplementedError):
                    return await super()._handle(request)
            return await self._route(request, k8s, raw)
        except ApiError as exc:
            return _json(exc.status(), exc.code)
        except kmock.KubernetesError as exc:
            return _json(ApiError(exc.status, "NotFound", exc.message or "not found").status(), exc.status)
        except Exception as exc:
            logger.exception("emulator failure on %s %s", raw.method, raw.path_qs)
            return _json(ApiError(500, "InternalError", repr(exc)).status(), 500)

    async def _route(
        self, request: rendering.Request, k8s: parsing.ParsedPath, raw: aiohttp.web.BaseRequest
    ) -> aiohttp.web.StreamResponse:
        path = raw.path.rstrip("/") or "/"
        if (raw.method == "GET" and path in ("/", "/api", "/apis", "/version")) or k8s.plural is None:
            return await self._discovery(request, path, k8s)
        assert k8s.group is not None and k8s.version is not None
        res = self.store.resolve(k8s.group, k8s.version, k8s.plural)
        if res.namespaced is False and k8s.namespace is not None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        query, store = request.params, self.store
        dry_run = bool(query.get("dryRun"))
        if "protobuf" in raw.content_type and request.body:  # kubectl's generators (create namespace ...)
            request = attrs.evolve(request, data=k8sproto.decode(request.body))
        if raw.method == "GET" and query.get("watch") in ("true", "1"):
            return await self._watch(raw, res, k8s, query)
        if raw.method == "GET" and k8s.name is None:
            return self._list(raw, res, k8s.namespace, query)
        if raw.method == "GET" and res.key == ("", "v1", "pods") and k8s.subresource == "log":
            return await self._log(raw, res, k8s, query)
        if raw.method == "GET":
            if k8s.subresource not in (None, "status"):
                raise ApiError(404, "NotFound", "the server could not find the requested resource")
            return self._render(raw, res, [store.get(res, k8s.namespace, k8s.name)], single=True)
        if raw.method == "POST" and k8s.name is None:
            return _json(store.create(res, k8s.namespace, request.data, dry_run), 201)
        if raw.method == "PUT" and k8s.name:
            return _json(store.update(res, k8s.namespace, k8s.name, request.data, k8s.subresource, dry_run))
        if raw.method == "PATCH" and k8s.name:
            if "apply-patch" in raw.content_type:
                raise ApiError(415, "UnsupportedMediaType", "server-side apply is not emulated")
            return _json(
                store.update(
                    res,
                    k8s.namespace,
                    k8s.name,
                    request.data,
                    k8s.subresource,
                    dry_run,
                    patch_type=raw.content_type,
                )
            )
        if raw.method == "DELETE" and k8s.name:
            options = dict(request.data) if isinstance(request.data, dict) else {}
            for param in ("propagationPolicy", "orphanDependents"):
                if param in query:
                    options[param] = query[param] if param != "orphanDependents" else query[param] == "true"
            return _json(store.delete(res, k8s.namespace, k8s.name, options, dry_run))
        if raw.method == "DELETE":
            predicate = self._predicate(query)
            items = store.list(res, k8s.namespace, predicate)
            for obj in items:
                meta = obj["metadata"]
                store.delete(res, meta.get("namespace"), meta["name"], {}, dry_run)
            return _json(self._list_body(res, items))
        raise ApiError(405, "MethodNotAllowed", f"{raw.method} is not supported on {raw.path}")

    async def _log(
        self,
        raw: aiohttp.web.BaseRequest,
        res: ResourceDef,
        k8s: parsing.ParsedPath,
        query: Mapping[str, str],
    ) -> aiohttp.web.StreamResponse:
        assert k8s.name is not None
        path = podlogs.log_file(self.pod_logs, self.store.get(res, k8s.namespace, k8s.name), query)

        def phase() -> str | None:
            try:
                return str(
                    (self.store.get(res, k8s.namespace, k8s.name or "").get("status") or {}).get("phase")
                )
            except ApiError:
                return None

        return await podlogs.serve(raw, path, query, phase)

    @staticmethod
    def _predicate(query: dict[str, str]) -> Any:
        try:
            labels, fields = (
                label_selector(query.get("labelSelector")),
                field_selector(query.get("fieldSelector")),
            )
        except SelectorError as exc:
            raise ApiError(400, "BadRequest", str(exc)) from exc
        return lambda obj: labels(obj) and fields(obj)

    def _list_body(self, res: ResourceDef, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "kind": f"{res.kind}List",
            "apiVersion": res.api_version,
            "metadata": {"resourceVersion": str(self.store.rv)},
            "items": items,
        }

    def _list(
        self, raw: aiohttp.web.BaseRequest, res: ResourceDef, namespace: str | None, query: dict[str, str]
    ) -> aiohttp.web.Response:
        items = sorted(
            self.store.list(res, namespace, self._predicate(query)),
            key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]),
        )
        return self._render(raw, res, items, single=False)

    def _render(
        self, raw: aiohttp.web.BaseRequest, res: ResourceDef, items: list[dict[str, Any]], single: bool
    ) -> aiohttp.web.Response:
        if tables.wants_table(raw.headers.get("Accept", "")):
            columns = res.columns if res.columns is not None else tables.builtin_columns(res.plural)
            include = raw.query.get("includeObject", "Metadata")
            return _json(tables.render_table(items, columns, str(self.store.rv), include))
        return _json(items[0] if single else self._list_body(res, items))

    async def _watch(
        self, raw: aiohttp.web.BaseRequest, res: ResourceDef, k8s: parsing.ParsedPath, query: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        if k8s.name:
            query = dict(
                query,
                fieldSelector=",".join(
                    filter(None, [query.get("fieldSelector"), f"metadata.name={k8s.name}"])
                ),
            )
        since = query.get("resourceVersion")
        as_table = tables.wants_table(raw.headers.get("Accept", ""))
        columns = res.columns if res.columns is not None else tables.builtin_columns(res.plural)
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)
        try:
            initial, watcher = self.store.subscribe(
                res, k8s.namespace, self._predicate(query), int(since) if since else None
            )
        except ApiError as exc:
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            return response
        timeout = float(query.get("timeoutSeconds") or 3600)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            pending: list[tuple[str, dict[str, Any]]] = list(initial)
            while True:
                for kind, obj in pending:
                    shown = (
                        tables.render_table([obj], columns, obj["metadata"]["resourceVersion"])
                        if as_table
                        else obj
                    )
                    await response.write(json.dumps({"type": kind, "object": shown}).encode() + b"\n")
                pending = []
                try:
                    item = await asyncio.wait_for(watcher.queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                if item is None:
                    break
                pending = [item]
                while not watcher.queue.empty() and (extra := watcher.queue.get_nowait()) is not None:
                    pending.append(extra)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.store.watchers[res.key].discard(watcher)
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
        return response

    async def _discovery(
        self, request: rendering.Request, path: str, k8s: parsing.ParsedPath
    ) -> aiohttp.web.Response:
        if path == "/version":
            return _json(
                {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kubeemu", "platform": "linux/amd64"}
            )
        if path == "/":
            return _json(await self._serve_root(request))
        defs = list(self.store.defs.values())
        if path == "/openapi/v3":
            return _json(openapi.index(defs))
        if path.startswith("/openapi/v3/") and (doc := openapi.document(defs, path[len("/openapi/v3/") :])):
            return _json(doc)
        if path.startswith("/openapi"):
            raise ApiError(404, "NotFound", "the emulator publishes no such OpenAPI document")
        if path == "/api":
            return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if path == "/apis":
            return _json(await self._serve_apis(request))
        if (k8s.group and k8s.version is None) or (path.startswith("/apis/") and path.count("/") == 2):
            request = attrs.evolve(request, resource=references.resource(group=path.split("/")[2]))
            return _json(await self._serve_group(request))
        if k8s.version is not None:
            return _json(self._resource_list(k8s.group or "", k8s.version))
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        """``/api/v1`` or ``/apis/<group>/<version>``: an APIResourceList (kmock's filter misses these)."""
        members = [r for r in self.store.defs.values() if r.group == group and r.version == version]
        if not members:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        resources: list[dict[str, Any]] = []
        for res in members:
            entry = {
                "name": res.plural,
                "singularName": res.singular,
                "namespaced": res.namespaced,
                "kind": res.kind,
                "verbs": VERBS,
                "shortNames": res.shortnames,
                "categories": res.categories,
            }
            resources.append(entry)
            if res.status_subresource:
                resources.append(
                    {
                        "name": f"{res.plural}/status",
                        "singularName": "",
                        "namespaced": res.namespaced,
                        "kind": res.kind,
                        "verbs": ["get", "patch", "update"],
                    }
                )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}".lstrip("/"),
            "resources": resources,
        }
