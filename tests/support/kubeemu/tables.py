"""Server-side printing: ``meta.k8s.io/v1`` Tables from a CRD's additionalPrinterColumns.

kubectl asks every ``get`` for a Table; kmock has none, so ``kubectl get trainingruns`` would show only
names. Date columns are rendered as ages, as the API server's CRD table convertor does.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

_TOKEN_RE = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")

NAME_COLUMN = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "priority": 0,
    "description": "Name must be unique within a namespace.",
}
AGE_COLUMN = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "priority": 0,
    "description": "CreationTimestamp of the object.",
}


def json_path(obj: Any, path: str) -> Any:
    """Evaluate the simple JSONPath subset printer columns use: ``.a.b[0].c`` (None when absent)."""
    value = obj
    for name, index in _TOKEN_RE.findall(path.strip().strip("{}")):
        if name:
            value = value.get(name) if isinstance(value, dict) else None
        else:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        if value is None:
            return None
    return value


def age(timestamp: str | None, now: datetime.datetime | None = None) -> str:
    """``2024-01-01T00:00:00Z`` -> ``5s`` / ``3m`` / ``2h`` / ``4d`` like kubectl's HumanDuration."""
    if not timestamp:
        return "<unknown>"
    then = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = int(((now or datetime.datetime.now(datetime.UTC)) - then).total_seconds())
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600 * 3:
        return f"{seconds // 60}m"
    if seconds < 86400 * 2:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _cell(obj: dict[str, Any], column: dict[str, Any]) -> Any:
    value = json_path(obj, column["jsonPath"])
    if value is None:
        return None
    kind = column.get("type", "string")
    if kind == "date":
        return age(str(value))
    if kind == "integer" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if kind == "boolean":
        return bool(value)
    return value if isinstance(value, str) else str(value)


def builtin_columns(plural: str) -> list[dict[str, Any]]:
    """A minimal set of columns for built-in kinds (the real server prints more)."""
    extra: dict[str, list[dict[str, Any]]] = {
        "pods": [{"name": "Status", "type": "string", "jsonPath": ".status.phase"}],
        "jobs": [
            {"name": "Succeeded", "type": "integer", "jsonPath": ".status.succeeded"},
            {"name": "Failed", "type": "integer", "jsonPath": ".status.failed"},
        ],
        "namespaces": [{"name": "Status", "type": "string", "jsonPath": ".status.phase"}],
        "events": [
            {"name": "Reason", "type": "string", "jsonPath": ".reason"},
            {"name": "Message", "type": "string", "jsonPath": ".message"},
        ],
    }
    return [*extra.get(plural, []), AGE_COLUMN]


def render_table(
    objects: list[dict[str, Any]],
    columns: list[dict[str, Any]],
    resource_version: str,
    include: str = "Metadata",
) -> dict[str, Any]:
    """Build the Table kubectl prints; ``include`` is the request's includeObject (None/Metadata/Object)."""
    definitions = [NAME_COLUMN] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", c["name"]),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {"cells": [obj["metadata"]["name"]] + [_cell(obj, c) for c in columns]}
        if include == "Object":
            row["object"] = obj
        elif include != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }


def wants_table(accept: str) -> bool:
    first = accept.split(",")[0]
    return "as=Table" in first
