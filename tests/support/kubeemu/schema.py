"""CRD structural schemas: OpenAPI v3.0 -> JSON Schema validation, pruning and defaulting.

kmock stores whatever it is given. The real API server rejects invalid custom resources with a 422 that
names the field, prunes unknown fields and fills defaults; the operator's tests must see the same.
CEL rules (``x-kubernetes-validations``) are not evaluated.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from typing import Any

import jsonschema

_NUMERIC_BOUNDS = (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum"))


def to_json_schema(node: Any) -> Any:
    """Convert one OpenAPI v3.0 schema node (recursively) into JSON Schema 2020-12."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("properties", "patternProperties"):
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") or key in ("allOf", "anyOf", "oneOf"):
            out[key] = to_json_schema(value)
        elif not key.startswith("x-kubernetes-") and key not in ("nullable", "default", "description"):
            out[key] = copy.deepcopy(value)
    for exclusive, bound in _NUMERIC_BOUNDS:
        if isinstance(node.get(exclusive), bool):
            out.pop(exclusive)
            if node[exclusive] and bound in node:
                out[exclusive] = out.pop(bound)
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


def _preserves(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields") or node.get("x-kubernetes-int-or-string"))


def prune_and_default(obj: Any, node: dict[str, Any], root: bool = False) -> Any:
    """Drop fields the structural schema does not know and fill missing defaults (in place)."""
    if isinstance(obj, dict) and (node.get("type") == "object" or "properties" in node):
        props: dict[str, Any] = node.get("properties", {})
        additional = node.get("additionalProperties")
        for key in list(obj):
            if root and key in ("apiVersion", "kind", "metadata"):
                continue
            if key in props:
                if obj[key] is None and not props[key].get("nullable") and "default" in props[key]:
                    obj[key] = copy.deepcopy(props[key]["default"])
                prune_and_default(obj[key], props[key])
            elif isinstance(additional, dict):
                prune_and_default(obj[key], additional)
            elif not (_preserves(node) or additional is True):
                del obj[key]
        for key, sub in props.items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
                prune_and_default(obj[key], sub)
    elif isinstance(obj, list) and isinstance(node.get("items"), dict):
        for item in obj:
            prune_and_default(item, node["items"])
    return obj


def _path(parts: Iterable[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """(field path, message) phrased like the API server's OpenAPI validation errors."""
    path = _path(error.absolute_path)
    value = json.dumps(error.instance)
    where = path or "<root>"
    match error.validator:
        case "required":
            missing = str(error.message).split("'")[1]
            full = f"{path}.{missing}" if path else missing
            return full, f"{full}: Required value"
        case "minimum":
            detail = f"should be greater than or equal to {error.validator_value}"
        case "exclusiveMinimum":
            detail = f"should be greater than {error.validator_value}"
        case "maximum":
            detail = f"should be less than or equal to {error.validator_value}"
        case "exclusiveMaximum":
            detail = f"should be less than {error.validator_value}"
        case "pattern":
            detail = f"should match '{error.validator_value}'"
        case "type":
            kind = error.validator_value
            kind = kind[0] if isinstance(kind, list) else kind
            detail = f"must be of type {kind}: {value}"
            return path, f"{where}: Invalid value: {value}: {where} in body {detail}"
        case "enum":
            allowed = ", ".join(json.dumps(v) for v in error.validator_value if v is not None)
            return path, f"{where}: Unsupported value: {value}: supported values: {allowed}"
        case "minItems":
            detail = f"should have at least {error.validator_value} items"
        case "maxItems":
            detail = f"should have at most {error.validator_value} items"
        case "minLength":
            detail = f"should be at least {error.validator_value} chars long"
        case "maxLength":
            return path, f"{where}: Too long: may not be longer than {error.validator_value}"
        case _:
            detail = str(error.message)
    return path, f"{where}: Invalid value: {value}: {where} in body {detail}"


class CompiledSchema:
    """One CRD version's schema: the raw OpenAPI node (for pruning/defaults) and a JSON Schema validator."""

    def __init__(self, openapi: dict[str, Any]) -> None:
        self.openapi = openapi
        converted = to_json_schema(openapi)
        self.validator = jsonschema.Draft202012Validator(converted)

    def prepare(self, obj: dict[str, Any]) -> dict[str, Any]:
        return prune_and_default(obj, self.openapi, root=True)  # type: ignore[no-any-return]

    def errors(self, obj: dict[str, Any]) -> list[tuple[str, str]]:
        """Sorted (field, message) pairs; empty when valid."""
        found = [_describe(error) for error in self.validator.iter_errors(obj)]
        return sorted(set(found))
