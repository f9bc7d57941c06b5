"""The CRD is the model: generated file up to date, every spec and status model field in the schema, samples
valid for both."""

from __future__ import annotations

import copy
import pathlib
import types
from datetime import datetime, timezone
from typing import Any, Union, get_args, get_origin

import jsonschema
import pytest
import yaml
from pydantic import BaseModel
from trainop import crd
from trainop.status import compose

from trainer.api.manifest import parse_spec
from trainer.api.spec import TrainingRunSpec
from trainer.api.status import TrainingRunStatus
from trainer.status_report import StatusReporter

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLES = sorted(
    p
    for p in (ROOT / "manifests" / "samples").glob("*.yaml")
    if any((d or {}).get("kind") == "TrainingRun" for d in yaml.safe_load_all(p.read_text()))
)


def training_runs(path: pathlib.Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if (d or {}).get("kind") == "TrainingRun"]


def to_json_schema(node: Any) -> Any:
    """OpenAPI v3.0 (structural, with Kubernetes extensions) -> JSON Schema draft 2020-12."""
    if isinstance(node, list):
        return [to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-")}
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if out.get(bound) is True:
            out[bound] = out.pop(plain)
        elif out.get(bound) is False:
            out.pop(bound)
    if out.pop("nullable", False):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
        if "anyOf" in out:
            out["anyOf"] = [*out["anyOf"], {"type": "null"}]
    if node.get("type") == "object" and "properties" in node:
        # Structural schemas prune unknown fields; the model forbids them. Be as strict as the model here.
        out["additionalProperties"] = False
    return out


def version_schema() -> dict[str, Any]:
    return dict(crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_manifest_is_generated() -> None:
    assert (ROOT / "manifests" / "crd.yaml").read_text() == crd.render(), (
        "manifests/crd.yaml is stale: python -m trainop.crd > manifests/crd.yaml"
    )


def _model_paths(annotation: Any, prefix: str = "") -> set[str]:
    """Dotted camelCase paths of every field, ``[]`` marking list items."""
    paths: set[str] = set()
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            path = f"{prefix}.{field.alias or name}" if prefix else (field.alias or name)
            paths.add(path)
            paths |= _model_paths(field.annotation, path)
    elif get_origin(annotation) is list:
        paths |= _model_paths(get_args(annotation)[0], prefix + "[]")
    elif get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            paths |= _model_paths(arg, prefix)
    return paths


def _schema_paths(node: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for name, child in (node.get("properties") or {}).items():
        paths.add(prefix + name)
        paths |= _schema_paths(child, f"{prefix}{name}.")
        if isinstance(child.get("items"), dict):
            paths |= _schema_paths(child["items"], f"{prefix}{name}[].")
    return paths


def test_every_model_field_is_in_the_schema() -> None:
    model = _model_paths(TrainingRunSpec)
    schema = _schema_paths(version_schema()["properties"]["spec"])
    assert model, "no fields found in the model"
    assert model == schema, f"model only: {sorted(model - schema)}; schema only: {sorted(schema - model)}"


def _leaf_paths(node: Any, prefix: str = "") -> set[str]:
    """Dotted paths of every key in a JSON document, ``[]`` marking list items."""
    paths: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{prefix}.{key}" if prefix else key
            paths |= {path, *_leaf_paths(value, path)}
    elif isinstance(node, list):
        for item in node:
            paths |= _leaf_paths(item, prefix + "[]")
    return paths


def test_status_schema_is_the_status_model() -> None:
    """The status schema is generated from ``TrainingRunStatus``: the same keys, and every key the trainer's
    reporter and the operator write is one of them."""
    status_node = version_schema()["properties"]["status"]
    model = _model_paths(TrainingRunStatus)
    schema = _schema_paths(status_node)
    assert model == schema, f"model only: {sorted(model - schema)}; schema only: {sorted(schema - model)}"

    sent: list[dict[str, Any]] = []
    reporter = StatusReporter(sent.append, throttle_seconds=0)
    reporter.progress(
        epoch=41,
        total_epochs=100,
        train_loss=0.7,
        val_loss=0.5,
        val_mase=0.9,
        best_val_loss=0.45,
        best_epoch=39,
        samples_per_second=1000.0,
        eta_seconds=120.0,
    )
    reporter.checkpoint(latest="s3://b/p/checkpoints/epoch-000041.pt", best="s3://b/p/best.pt", epoch=41)
    keys = ["valMae", "valMase", "coverage80", "pinball", "empiricalPinball", "ewmaPinball", "garchPinball"]
    reporter.final(
        {**dict.fromkeys(keys, 0.5), "skillVsGarch": 0.1, "median": "learned", "band": "prior"}
        | {"bestEpoch": 39, "wallSeconds": 12.5, "parameters": 59823}
    )
    written = set().union(*(_leaf_paths(body["status"]) for body in sent))
    run = {"metadata": {"generation": 2}, "status": {}}
    change = compose(
        run,
        [("JobCreated", "True", "JobCreated", "created"), ("Running", "True", "PodRunning", "running")],
        datetime(2026, 1, 1, tzinfo=timezone.utc),
        jobName="x-train",
        restarts=1,
        startTime="2026-01-01T00:00:00Z",
        completionTime="2026-01-01T01:00:00Z",
    )
    written |= _leaf_paths(change.status)
    assert {"progress.samplesPerSecond", "metrics.garchPinball", "conditions[].type", "jobName"} <= written
    assert written <= schema, f"written but not in the schema: {sorted(written - schema)}"
    status = status_node["properties"]
    assert status["conditions"]["items"]["properties"]["type"]["enum"] == [
        "JobCreated",
        "Running",
        "Succeeded",
        "Failed",
        "Stalled",
        "Suspended",
    ]
    assert status["phase"]["enum"] == ["Pending", "Running", "Succeeded", "Failed", "Suspended"]
    columns = {
        c["name"]: c["jsonPath"] for c in crd.build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert columns["Phase"] == ".status.phase" and columns["Epoch"] == ".status.progress.epochDisplay"


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.name for s in SAMPLES])
def test_samples_validate_against_model_and_schema(sample: pathlib.Path) -> None:
    schema = to_json_schema(version_schema())
    for doc in training_runs(sample):
        parse_spec(doc["spec"])
        jsonschema.validate(doc, schema)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("training", "epochs"), 0),
        (("training", "learningRate"), 0.0),
        (("symbol",), "sol"),
        (("training", "device"), "tpu"),
        (("training", "epochz"), 3),
        (("stallTimeout",), "soon"),
    ],
)
def test_bad_values_are_refused_by_both(path: tuple[str, ...], value: Any) -> None:
    doc = training_runs(ROOT / "manifests" / "samples" / "sol-run.yaml")[0]
    bad = copy.deepcopy(doc)
    node = bad["spec"]
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    with pytest.raises(ValueError):
        parse_spec(bad["spec"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, to_json_schema(version_schema()))
