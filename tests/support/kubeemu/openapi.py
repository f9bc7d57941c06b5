"""Just enough OpenAPI v3 for kubectl: per group/version documents whose PATCH operations declare the
``fieldValidation`` parameter, so ``kubectl apply`` trusts server-side validation instead of downloading
full schemas for client-side validation (which fails with "failed to download openapi").
"""

from __future__ import annotations

from typing import Any

from .builtins import ResourceDef


def gv_path(res: ResourceDef) -> str:
    return f"api/{res.version}" if not res.group else f"apis/{res.group}/{res.version}"


def index(defs: list[ResourceDef]) -> dict[str, Any]:
    """``/openapi/v3``: the group/versions and where their documents are."""
    paths = sorted({gv_path(res) for res in defs})
    return {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}?hash=kubeemu"} for path in paths}}


def document(defs: list[ResourceDef], path: str) -> dict[str, Any] | None:
    """``/openapi/v3/apis/<group>/<version>``: one PATCH operation per resource, schemas omitted."""
    members = [res for res in defs if gv_path(res) == path]
    if not members:
        return None
    params = [
        {"name": name, "in": "query", "schema": {"type": "string"}}
        for name in ("dryRun", "fieldManager", "fieldValidation", "force")
    ]
    paths: dict[str, Any] = {}
    for res in members:
        scope = "namespaces/{namespace}/" if res.namespaced else ""
        gvk = {"group": res.group, "version": res.version, "kind": res.kind}
        operation = {
            "operationId": f"patch{res.kind}",
            "parameters": params,
            "x-kubernetes-group-version-kind": gvk,
            "x-kubernetes-action": "patch",
            "responses": {"200": {"description": "OK"}},
        }
        create = dict(operation, operationId=f"create{res.kind}", **{"x-kubernetes-action": "post"})
        paths[f"/{path}/{scope}{res.plural}/{{name}}"] = {"patch": operation, "put": dict(operation)}
        paths[f"/{path}/{scope}{res.plural}"] = {"post": create}
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kubeemu)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": {}},
    }
