"""The patch flavours the API server accepts: JSON merge, strategic merge and JSON patch (RFC 6902).

kmock merges dicts only; kopf sends JSON patches with ``test`` ops on resourceVersion and finalizers,
kubectl sends strategic merge patches for built-ins and merge patches for custom resources.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch  # a dependency of kmock itself
import jsonpointer

# Lists merged by key under strategic merge (the few that matter here); others are replaced.
_MERGE_KEYS = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ports": "containerPort",
    "ownerReferences": "uid",
    "tolerations": "key",
}


class PatchError(Exception):
    """A patch that cannot be applied; ``code`` is the HTTP status the API server would answer."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: dicts merge recursively, ``null`` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any, field: str = "") -> Any:
    """Merge patch plus keyed merging of well-known lists and ``$patch: delete|replace`` directives."""
    if isinstance(patch, list) and isinstance(target, list) and field in _MERGE_KEYS:
        key = _MERGE_KEYS[field]
        merged = [copy.deepcopy(item) for item in target]
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                return copy.deepcopy(patch)
            wanted = item[key]
            matches = [i for i, old in enumerate(merged) if isinstance(old, dict) and old.get(key) == wanted]
            index = matches[0] if matches else None
            if item.get("$patch") == "delete":
                if index is not None:
                    merged.pop(index)
            elif index is None:
                merged.append(copy.deepcopy(item))
            else:
                merged[index] = strategic_merge_patch(merged[index], item)
        return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value, key)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902; a failed ``test`` op is 422 (kopf treats that as 'someone else changed it')."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations", 400)
    try:
        result: dict[str, Any] = jsonpatch.apply_patch(target, operations)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchError(f"the server rejected our request due to an error in our request: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise PatchError(f"the server rejected our request due to an error in our request: {exc}") from exc
    return result


def apply_patch(content_type: str, target: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Dispatch on the request's Content-Type, as the API server does."""
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/json-patch+json":
        return json_patch(target, patch)
    if not isinstance(patch, dict):
        raise PatchError("patch body must be a JSON object", 400)
    if kind == "application/merge-patch+json":
        result: dict[str, Any] = merge_patch(target, patch)
        return result
    if kind == "application/strategic-merge-patch+json":
        result = strategic_merge_patch(target, patch)
        return result
    raise PatchError(f"the body of the request was in an unknown format: {kind}", 415)
