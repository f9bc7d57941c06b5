"""Per-kind defaulting and validation of objects on create and update, as admission and registry strategies do.

Why a module of its own: these are the API server's rules about object *content* (RFC 1123 names, label
values, owner references, the CRD's OpenAPI schema, Secret ``stringData``, Job defaults and selector labels,
initial phases); the store is about object *state* (resourceVersions, finalizers, GC, watches) and calls
``admit`` before it commits a write.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from .builtins import ResourceDef
from .errors import invalid

_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_LABEL_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def admit(res: ResourceDef, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Per-kind defaulting and validation (what admission and the registry strategies do), in place;
    a ``CustomResourceDefinition`` is validated here and registered by the store."""
    meta, name = obj["metadata"], obj["metadata"]["name"]
    errors: list[tuple[str, str]] = []
    if len(name) > (63 if res.kind in ("Job", "Namespace", "Service") else 253) or not _NAME_RE.match(name):
        errors.append(
            (
                "metadata.name",
                f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 '
                "subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            )
        )
    for key, value in (meta.get("labels") or {}).items():
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_RE.match(value):
            errors.append(
                (
                    f"metadata.labels.{key}",
                    f"metadata.labels: Invalid value: {value!r}: a valid "
                    "label must be an empty string or consist of alphanumeric characters, '-', '_' "
                    "or '.', at most 63 characters",
                )
            )
    for i, ref in enumerate(meta.get("ownerReferences") or []):
        for field in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(field):
                errors.append(
                    (
                        f"metadata.ownerReferences[{i}].{field}",
                        f'metadata.ownerReferences.{field}: Invalid value: "": {field} must not be empty',
                    )
                )
    if res.schema is not None:
        res.schema.prepare(obj)
        errors += res.schema.errors(obj)
    if errors:
        raise invalid(res, name, errors)
    if res.kind == "Secret" and obj.get("stringData"):
        data = obj.setdefault("data", {}) or {}
        obj["data"] = data
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode()
    elif res.kind == "Namespace" and old is None:
        obj["status"] = {"phase": "Active"}
    elif res.kind == "Pod" and old is None:
        obj["status"] = {"phase": "Pending"}
    elif res.kind == "Job" and res.group == "batch":
        spec = obj.setdefault("spec", {})
        for field, default in (
            ("backoffLimit", 6),
            ("completions", 1),
            ("parallelism", 1),
            ("suspend", False),
        ):
            spec.setdefault(field, default)
        labels = {
            "batch.kubernetes.io/controller-uid": meta["uid"],
            "batch.kubernetes.io/job-name": name,
            "controller-uid": meta["uid"],
            "job-name": name,
        }
        spec.setdefault("selector", {"matchLabels": {"batch.kubernetes.io/controller-uid": meta["uid"]}})
        template_meta = spec.setdefault("template", {}).setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), **labels}
