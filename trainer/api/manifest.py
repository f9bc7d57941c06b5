"""Reading a TrainingRun: a manifest file or text, or a spec document, into the spec model, with one readable line
per problem.

Why apart from ``trainer.api.spec``: the model says what a valid spec is; this module turns pydantic's errors into
lines a user can act on (``spec.training.epochs: must be >= 1 (got 0)``, the allowed names for an unknown field, a
hint for a pattern) and reads manifests (YAML or JSON, files or environment variables) with errors that name the
file. Torch-free like the model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from trainer.api.errors import ConfigError
from trainer.api.spec import (
    API_GROUP,
    API_VERSION,
    DNS_LABEL_PATTERN,
    DURATION_PATTERN,
    KIND,
    S3_ENDPOINT_PATTERN,
    TrainingRunSpec,
)


class SpecError(ConfigError, ValueError):
    """A spec that cannot be trained, with one readable line per problem (no traceback for users)."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__(f"{source}: invalid TrainingRun spec:\n" + "\n".join(f"  - {p}" for p in problems))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across walk-forward's worker processes
        return (type(self), (self.source, self.problems))


def _allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The field names allowed at ``loc`` (for 'extra field' errors)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(_snake(str(part)))
        if field is None:
            return ""
        ann = field.annotation
        current = next(
            (a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)),
            None,
        )
        if current is None and isinstance(ann, type) and issubclass(ann, BaseModel):
            current = ann
    if current is None:
        return ""
    return ", ".join(f.alias or n for n, f in current.model_fields.items())


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


# What a pattern means, for the messages of the patterns whose regex alone says little to a reader.
_PATTERN_HINTS = {
    DURATION_PATTERN: "a duration such as 90s, 15m or 1h30m",
    S3_ENDPOINT_PATTERN: "a URL such as http://minio.minio:9000 (scheme and host, no credentials)",
    r"^\d{4}-\d{2}-\d{2}$": "a date YYYY-MM-DD",
}


def format_errors(
    err: ValidationError, model: type[BaseModel] = TrainingRunSpec, prefix: str = "spec"
) -> list[str]:
    """pydantic errors as 'spec.training.epochs: must be >= 1 (got 0)' lines."""
    lines = []
    for e in err.errors():
        loc = ".".join([prefix, *(str(p) for p in e["loc"])])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            allowed = _allowed(model, tuple(e["loc"]))
            msg = "unknown field" + (f"; allowed: {allowed}" if allowed else "")
        elif e["type"] == "literal_error":
            msg = msg.replace("Input should be", "must be one of") + f" (got {e.get('input')!r})"
        elif e["type"] == "value_error":  # the validators' own messages name the value and what is allowed
            msg = msg.removeprefix("Value error, ")
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg = f"{msg} (got {e['input']!r})"
            hint = _PATTERN_HINTS.get(str((e.get("ctx") or {}).get("pattern", "")))
            if hint:
                msg += f"; expected {hint}"
        lines.append(f"{loc}: {msg}")
    return lines


M = TypeVar("M", bound=BaseModel)


def parse_owner_spec(
    model: type[M],
    raw: Any,
    source: str,
    problems: Sequence[str] = (),
    errors: Callable[[list[str]], list[str]] = list,
) -> M:
    """The ``spec`` of a sweep or a schedule (``source``: "TrainingSweep x") as ``model``; raises SpecError with
    ``problems`` (those found before it) and the spec's own (``errors`` rewrites pydantic's lines)."""
    if not isinstance(raw, Mapping):
        raise SpecError(source, [*problems, f"spec: must be an object, not {type(raw).__name__}"])
    try:
        return model.model_validate(dict(raw))
    except ValidationError as err:
        raise SpecError(source, [*problems, *errors(format_errors(err, model))]) from None


def parse_spec(spec: dict[str, Any], source: str = "spec") -> TrainingRunSpec:
    try:
        return TrainingRunSpec.model_validate(spec)
    except ValidationError as err:
        raise SpecError(source, format_errors(err)) from None


def load_manifest(path: str | Path) -> tuple[str, TrainingRunSpec]:
    """Read a TrainingRun manifest (YAML) and return ``(metadata.name, spec)``; raises SpecError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(p), ["file not found"]) from None
    except IsADirectoryError:
        raise SpecError(str(p), ["is a directory; give the manifest file (YAML or JSON)"]) from None
    except PermissionError:
        raise SpecError(str(p), ["permission denied"]) from None
    except UnicodeDecodeError as exc:
        raise SpecError(
            str(p),
            [
                f"not a text file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8); "
                "a manifest is YAML or JSON"
            ],
        ) from None
    return parse_manifest(text, str(p))


def parse_manifest(text: str, source: str) -> tuple[str, TrainingRunSpec]:
    """A TrainingRun manifest's text (YAML or JSON) -> ``(metadata.name, spec)``; raises SpecError."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(source, [f"not valid YAML: {exc}"]) from None
    if not isinstance(doc, dict):
        raise SpecError(source, ["expected a TrainingRun object (apiVersion, kind, metadata, spec)"])
    problems = []
    if doc.get("apiVersion") != f"{API_GROUP}/{API_VERSION}":
        problems.append(f"apiVersion: must be {API_GROUP}/{API_VERSION} (got {doc.get('apiVersion')!r})")
    if doc.get("kind") != KIND:
        problems.append(f"kind: must be {KIND} (got {doc.get('kind')!r})")
    name = (doc.get("metadata") or {}).get("name")
    if not name or not re.match(DNS_LABEL_PATTERN, str(name)):
        problems.append(f"metadata.name: must be a DNS label such as sol-tft (got {name!r})")
    if doc.get("spec") is None:
        problems.append("spec: missing")
    elif not isinstance(doc.get("spec"), dict):
        problems.append(f"spec: must be an object, not {type(doc['spec']).__name__}")
    if problems:
        raise SpecError(source, problems)
    return str(name), parse_spec(doc["spec"], source)
