"""Object state with API-server semantics: resourceVersions, generations, finalizers, GC and watch history.

kmock keeps every object's full history and scans all of it per request (200 creates took 67 s); here
the current state lives in one dict per resource, the watch history is a bounded deque, and owner
references are indexed so cascading deletion does not scan either. All methods are synchronous and run on
the server's event loop, so no locks are needed: a write and its watch event are atomic.
Per-kind defaulting and validation of object content live in ``admission``, the error answers in
``errors``.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import random
import string
import uuid
from collections.abc import Callable
from typing import Any

from .admission import admit
from .builtins import ResourceDef, crd_resources
from .errors import ApiError, invalid
from .patching import PatchError, apply_patch
from .selectors import Predicate

Key = tuple[str, str, str]
ObjKey = tuple[str, str]  # (namespace or "", name)
Event = tuple[int, Key, str, dict[str, Any]]


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _qualified(res: ResourceDef) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


def _details(res: ResourceDef, name: str) -> dict[str, Any]:
    return {"name": name, "group": res.group, "kind": res.plural}


class Watcher:
    """One open watch: the events it wants go to its queue (None ends the stream)."""

    def __init__(self, namespace: str | None, predicate: Predicate) -> None:
        self.namespace, self.predicate = namespace, predicate
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()

    def wants(self, obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return (self.namespace is None or meta.get("namespace") == self.namespace) and self.predicate(obj)


class Store:
    """All objects of all resources, keyed by resource then (namespace, name)."""

    def __init__(self, history: int = 20000) -> None:
        self.defs: dict[Key, ResourceDef] = {}
        self.objects: dict[Key, dict[ObjKey, dict[str, Any]]] = {}
        self.rv = 0
        self.history: collections.deque[Event] = collections.deque(maxlen=history)
        self.watchers: dict[Key, set[Watcher]] = collections.defaultdict(set)
        self.by_uid: dict[str, tuple[Key, ObjKey]] = {}
        self.dependents: dict[str, set[tuple[Key, ObjKey]]] = collections.defaultdict(set)
        self.policies: dict[str, str] = {}  # uid -> propagation policy of a deletion awaiting finalizers
        self.on_defs_changed: Callable[[], None] = lambda: None

    # -- resources ------------------------------------------------------------------------------------
    def register(self, res: ResourceDef) -> None:
        self.defs[res.key] = res
        self.objects.setdefault(res.key, {})
        self.on_defs_changed()

    def resolve(self, group: str, version: str, plural: str) -> ResourceDef:
        res = self.defs.get((group, version, plural))
        if res is None:
            raise ApiError(
                404,
                "NotFound",
                "the server could not find the requested resource",
                {"group": group, "kind": plural},
            )
        return res

    def by_kind(self, api_version: str, kind: str) -> ResourceDef | None:
        return next((r for r in self.defs.values() if r.api_version == api_version and r.kind == kind), None)

    # -- reads ----------------------------------------------------------------------------------------
    def get(self, res: ResourceDef, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self.objects[res.key].get((namespace or "" if res.namespaced else "", name))
        if obj is None:
            raise ApiError(404, "NotFound", f'{_qualified(res)} "{name}" not found', _details(res, name))
        return obj

    def list(self, res: ResourceDef, namespace: str | None, predicate: Predicate) -> list[dict[str, Any]]:
        items = self.objects[res.key].values()
        return [
            o
            for o in items
            if (namespace is None or o["metadata"].get("namespace") == namespace) and predicate(o)
        ]

    def subscribe(
        self, res: ResourceDef, namespace: str | None, predicate: Predicate, since: int | None
    ) -> tuple[list[tuple[str, dict[str, Any]]], Watcher]:
        """Initial events (ADDED for all, or the history after ``since``) and a live watcher, gap-free."""
        watcher = Watcher(namespace, predicate)
        if since is None or since == 0:
            initial = [("ADDED", o) for o in self.list(res, namespace, predicate)]
        else:
            if (
                since < self.rv
                and self.history
                and self.history[0][0] > since + 1
                and len(self.history) == self.history.maxlen
            ):
                raise ApiError(410, "Expired", f"too old resource version: {since} ({self.history[0][0]})")
            initial = [
                (kind, obj)
                for rv, key, kind, obj in self.history
                if rv > since and key == res.key and watcher.wants(obj)
            ]
        self.watchers[res.key].add(watcher)
        return initial, watcher

    # -- writes ---------------------------------------------------------------------------------------
    def _emit(self, res: ResourceDef, kind: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rv, res.key, kind, obj))
        for watcher in self.watchers.get(res.key, ()):
            if watcher.wants(obj):
                watcher.queue.put_nowait((kind, obj))

    def _reindex(self, key: Key, nk: ObjKey, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for obj, add in ((old, False), (new, True)):
            for ref in (obj or {}).get("metadata", {}).get("ownerReferences") or []:
                (self.dependents[ref["uid"]].add if add else self.dependents[ref["uid"]].discard)((key, nk))

    def _commit(self, res: ResourceDef, new: dict[str, Any], old: dict[str, Any] | None) -> dict[str, Any]:
        meta = new["metadata"]
        nk = (meta.get("namespace", ""), meta["name"])
        self.rv += 1
        meta["resourceVersion"] = str(self.rv)
        self.objects[res.key][nk] = new
        self._reindex(res.key, nk, old, new)
        self.by_uid[meta["uid"]] = (res.key, nk)
        self._emit(res, "ADDED" if old is None else "MODIFIED", new)
        if meta.get("deletionTimestamp") and not meta.get("finalizers"):
            self._remove(res, new, self.policies.pop(meta["uid"], "Background"))
        return new

    def _remove(self, res: ResourceDef, obj: dict[str, Any], policy: str) -> None:
        meta = obj["metadata"]
        nk = (meta.get("namespace", ""), meta["name"])
        if self.objects[res.key].get(nk) is not obj:
            return
        del self.objects[res.key][nk]
        self._reindex(res.key, nk, obj, None)
        self.by_uid.pop(meta["uid"], None)
        self.rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(res, "DELETED", gone)
        if res.key == ("", "v1", "namespaces"):
            for other in list(self.defs.values()):
                for child in [o for (ns, _), o in self.objects[other.key].items() if ns == meta["name"]]:
                    self._delete(other, child, "Background")
        if res.crd is None and res.key == ("apiextensions.k8s.io", "v1", "customresourcedefinitions"):
            for served in crd_resources(obj):
                for child in list(self.objects.get(served.key, {}).values()):
                    self._remove(served, child, "Background")
                self.defs.pop(served.key, None)
            self.on_defs_changed()
        self._collect(meta["uid"], policy)

    def _collect(self, uid: str, policy: str) -> None:
        """Garbage-collect (or orphan) the dependents of a removed owner."""
        for key, nk in list(self.dependents.pop(uid, ())):
            res, child = self.defs.get(key), self.objects.get(key, {}).get(nk)
            if res is None or child is None:
                continue
            refs = child["metadata"].get("ownerReferences") or []
            alive = [r for r in refs if r.get("uid") != uid and r.get("uid") in self.by_uid]
            if policy == "Orphan" or alive:
                new = copy.deepcopy(child)
                new["metadata"]["ownerReferences"] = [r for r in refs if r.get("uid") != uid]
                self._commit(res, new, child)
            else:
                self._delete(res, child, policy)

    def _delete(self, res: ResourceDef, obj: dict[str, Any], policy: str) -> dict[str, Any]:
        meta = obj["metadata"]
        if not meta.get("finalizers"):
            self._remove(res, obj, policy)
            return obj
        if policy == "Orphan":
            self._collect(meta["uid"], "Orphan")
        else:
            self.policies[meta["uid"]] = policy
        if meta.get("deletionTimestamp"):
            return obj
        new = copy.deepcopy(obj)
        new["metadata"].update(deletionTimestamp=now(), deletionGracePeriodSeconds=0)
        return self._commit(res, new, obj)

    def delete(
        self,
        res: ResourceDef,
        namespace: str | None,
        name: str,
        options: dict[str, Any],
        dry_run: bool = False,
    ) -> dict[str, Any]:
        obj = self.get(res, namespace, name)
        pre = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            if pre.get(field) and pre[field] != obj["metadata"].get(field):
                raise self._conflict(res, name, f"Precondition failed: {field}")
        policy = options.get("propagationPolicy") or (
            "Orphan"
            if options.get("orphanDependents") is True or res.key == ("batch", "v1", "jobs")
            else "Background"
        )
        return obj if dry_run else self._delete(res, obj, policy)

    @staticmethod
    def _conflict(res: ResourceDef, name: str, why: str) -> ApiError:
        return ApiError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {_qualified(res)} "{name}": {why}',
            _details(res, name),
        )

    def create(
        self, res: ResourceDef, namespace: str | None, body: Any, dry_run: bool = False
    ) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {}) or {}
        obj["metadata"] = meta
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + "".join(
                random.choices(string.ascii_lowercase + "2456789", k=5)
            )
        name = meta.get("name") or ""
        if not name:
            raise invalid(
                res,
                "",
                [("metadata.name", "metadata.name: Required value: name or generateName is required")],
            )
        if res.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if meta.get("namespace", namespace) != namespace:
                raise ApiError(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if (meta.get("namespace", ""), name) in self.objects[res.key]:
            raise ApiError(
                409, "AlreadyExists", f'{_qualified(res)} "{name}" already exists', _details(res, name)
            )
        obj.update(apiVersion=res.api_version, kind=res.kind)
        for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
            meta.pop(field, None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now(), generation=1)
        if res.status_subresource:
            obj.pop("status", None)
        self._prepare(res, obj, None)
        if dry_run:
            return obj
        if res.namespaced and ("", namespace) not in self.objects[("", "v1", "namespaces")]:
            self.create(self.defs[("", "v1", "namespaces")], None, {"metadata": {"name": namespace}})
        return self._commit(res, obj, None)

    def update(
        self,
        res: ResourceDef,
        namespace: str | None,
        name: str,
        body: Any,
        subresource: str | None,
        dry_run: bool = False,
        patch_type: str | None = None,
    ) -> dict[str, Any]:
        """PUT (``patch_type`` None) or PATCH of the main resource or its ``status`` subresource."""
        old = self.get(res, namespace, name)
        if subresource not in (None, "status") or (subresource == "status" and not res.status_subresource):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if patch_type is not None:
            try:
                body = apply_patch(patch_type, copy.deepcopy(old), body)
            except PatchError as exc:
                raise ApiError(exc.code, "Invalid" if exc.code == 422 else "BadRequest", str(exc)) from exc
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "the body of the request was not a JSON object")
        given = (body.get("metadata") or {}).get("resourceVersion")
        if given and given != old["metadata"]["resourceVersion"]:
            raise self._conflict(
                res,
                name,
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        if subresource == "status" or (res.status_subresource and subresource is None):
            new = copy.deepcopy(old) if subresource == "status" else copy.deepcopy(body)
            source = body if subresource == "status" else old
            new.pop("status", None)
            if source.get("status") is not None:
                new["status"] = copy.deepcopy(source["status"])
        else:
            new = copy.deepcopy(body)
        meta = new.setdefault("metadata", {})
        if meta.get("name", name) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        keep = (
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
            "resourceVersion",
        )
        for field in keep:
            meta.pop(field, None)
            if field in old["metadata"]:
                meta[field] = old["metadata"][field]
        new.update(apiVersion=res.api_version, kind=res.kind)
        if old["metadata"].get("deletionTimestamp"):
            added = set(meta.get("finalizers") or []) - set(old["metadata"].get("finalizers") or [])
            if added:
                raise invalid(
                    res,
                    name,
                    [
                        (
                            "metadata.finalizers",
                            "metadata.finalizers: Forbidden: no new "
                            "finalizers can be added if the object is being deleted",
                        )
                    ],
                )
        self._prepare(res, new, old)
        if new == old:
            return old
        if any(new.get(k) != old.get(k) for k in set(new) | set(old) if k not in ("metadata", "status")):
            meta["generation"] = old["metadata"].get("generation", 1) + 1
        return new if dry_run else self._commit(res, new, old)

    def _prepare(self, res: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Per-kind defaulting and validation (``admission.admit``); a CRD then registers what it serves."""
        admit(res, obj, old)
        if res.kind == "CustomResourceDefinition" and res.group == "apiextensions.k8s.io":
            self._register_crd(obj, old)

    def _register_crd(self, crd: dict[str, Any], old: dict[str, Any] | None) -> None:
        try:
            served = crd_resources(crd)
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError(422, "Invalid", f"CustomResourceDefinition is invalid: {exc}") from exc
        for stale in crd_resources(old) if old else []:
            self.defs.pop(stale.key, None)
        for res in served:
            self.register(res)
        names = dict(crd["spec"]["names"])
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
        stamp = now()
        crd["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {"type": t, "status": "True", "reason": r, "message": "", "lastTransitionTime": stamp}
                for t, r in (("NamesAccepted", "NoConflicts"), ("Established", "InitialNamesAccepted"))
            ],
        }
