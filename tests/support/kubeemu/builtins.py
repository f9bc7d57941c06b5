"""The built-in kinds the emulator serves and announces in discovery.

kmock discovers resources only from its reactions or explicit declarations; kopf, kubectl and the
operator need these core/batch/rbac/apiextensions/coordination/events kinds to exist before any object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .schema import CompiledSchema

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


@dataclass
class ResourceDef:
    """One served group/version/plural and what the server needs to know about it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    shortnames: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    singular: str = ""
    status_subresource: bool = False
    schema: CompiledSchema | None = None
    columns: list[dict[str, Any]] | None = None  # additionalPrinterColumns; None: built-in minimal table
    crd: str | None = None  # the CRD's name, for custom resources

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.group, self.version, self.plural)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


_B = ResourceDef
BUILTINS: list[ResourceDef] = [
    _B("", "v1", "namespaces", "Namespace", namespaced=False, shortnames=["ns"], status_subresource=True),
    _B("", "v1", "pods", "Pod", shortnames=["po"], categories=["all"], status_subresource=True),
    _B("", "v1", "events", "Event", shortnames=["ev"]),
    _B("", "v1", "serviceaccounts", "ServiceAccount", shortnames=["sa"]),
    _B("", "v1", "secrets", "Secret"),
    _B("", "v1", "configmaps", "ConfigMap", shortnames=["cm"]),
    _B("", "v1", "services", "Service", shortnames=["svc"], categories=["all"], status_subresource=True),
    _B(
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        shortnames=["pvc"],
        status_subresource=True,
    ),
    _B("", "v1", "nodes", "Node", namespaced=False, shortnames=["no"], status_subresource=True),
    _B("batch", "v1", "jobs", "Job", categories=["all"], status_subresource=True),
    _B("batch", "v1", "cronjobs", "CronJob", shortnames=["cj"], categories=["all"], status_subresource=True),
    _B(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        shortnames=["deploy"],
        categories=["all"],
        status_subresource=True,
    ),
    _B("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    _B("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    _B("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    _B("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", namespaced=False),
    _B(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        shortnames=["crd", "crds"],
        status_subresource=True,
    ),
    _B("coordination.k8s.io", "v1", "leases", "Lease"),
    _B("events.k8s.io", "v1", "events", "Event", shortnames=["ev"]),
    _B("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", namespaced=False, shortnames=["pc"]),
    _B("kopf.dev", "v1", "clusterkopfpeerings", "ClusterKopfPeering", namespaced=False),
    _B("kopf.dev", "v1", "kopfpeerings", "KopfPeering"),
]
for _res in BUILTINS:
    _res.singular = _res.kind.lower()


def crd_resources(crd: dict[str, Any]) -> list[ResourceDef]:
    """The served versions of a CustomResourceDefinition as ResourceDefs."""
    spec = crd.get("spec", {})
    names = spec.get("names", {})
    result = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        openapi = (version.get("schema") or {}).get("openAPIV3Schema")
        result.append(
            ResourceDef(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                shortnames=list(names.get("shortNames", [])),
                categories=list(names.get("categories", [])),
                singular=names.get("singular") or names["kind"].lower(),
                status_subresource="status" in (version.get("subresources") or {}),
                schema=CompiledSchema(openapi) if openapi else None,
                columns=list(
                    version.get("additionalPrinterColumns")
                    or [{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}]
                ),
                crd=crd["metadata"]["name"],
            )
        )
    return result
