"""The TrainingRun CustomResourceDefinition, generated from the pydantic spec and status models.

Why generate: the API server must refuse exactly what ``trainer.api.spec.TrainingRunSpec`` refuses, with the same
bounds, enums, patterns and defaults, so a bad spec fails at ``kubectl apply`` with the field's name instead
of in a pod. pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema, so this
module inlines ``$ref``s, turns ``anyOf [X, null]`` into ``nullable``, ``int | str`` into
``x-kubernetes-int-or-string`` and numeric ``exclusiveMinimum`` into the boolean form, and adds CEL rules for
the cross-field checks the model does in validators. The status subresource's schema comes the same way from
``trainer.api.status.TrainingRunStatus``, the model the trainer and the operator write and read the status with.
``manifests/crd.yaml`` and the chart's ``crds/`` are this output (a test keeps them equal). The TrainingSweep CRD
(``--sweep``: ``manifests/crd-sweep.yaml``, ``crds/trainingsweeps.yaml``) comes the same way from
``trainer.api.sweep``; its ``spec.template`` is the TrainingRun spec's schema. The TrainingSchedule CRD
(``--schedule``: ``manifests/crd-schedule.yaml``, ``crds/trainingschedules.yaml``) likewise from
``trainer.api.schedule``, its ``spec.template.spec`` the TrainingRun spec's.

Run ``scripts/sync_manifests.py`` (or ``python -m trainop.crd > manifests/crd.yaml``) after changing a model.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml
from pydantic import BaseModel

from trainer.api.schedule import (
    SCHEDULE_KIND,
    SCHEDULE_PLURAL,
    RunTemplate,
    TrainingScheduleSpec,
    TrainingScheduleStatus,
)
from trainer.api.spec import API_GROUP, API_VERSION, KIND, PLURAL, TrainingRunSpec
from trainer.api.status import TrainingRunStatus
from trainer.api.sweep import SWEEP_KIND, SWEEP_PLURAL, TrainingSweepSpec, TrainingSweepStatus

# Cross-field rules the pydantic validators enforce, in CEL for the API server.
CEL_RULES: dict[tuple[str, ...], list[dict[str, str]]] = {
    (): [
        {
            "rule": "!has(self.symbols) || size(self.symbols) == 0 || self.symbols[0] == self.symbol",
            "message": "symbols[0] must be the evaluated symbol (spec.symbol)",
            "fieldPath": ".symbols",
        },
        # A multi-worker run's gang (its Indexed Job, Service and restarts) is shaped at creation.
        {
            "rule": "(has(self.workers) ? self.workers : 1) == (has(oldSelf.workers) ? oldSelf.workers : 1)",
            "message": "workers cannot change after creation; delete and re-create the TrainingRun",
            "fieldPath": ".workers",
        },
        {
            "rule": "has(self.procsPerWorker) == has(oldSelf.procsPerWorker) && "
            "(!has(self.procsPerWorker) || self.procsPerWorker == oldSelf.procsPerWorker)",
            "message": "procsPerWorker cannot change after creation; delete and re-create the TrainingRun",
            "fieldPath": ".procsPerWorker",
        },
    ],
    ("model",): [
        {
            "rule": "!has(self.hiddenSize) || !has(self.attentionHeads) || "
            "self.hiddenSize % self.attentionHeads == 0",
            "message": "hiddenSize must be divisible by attentionHeads",
        },
        {
            "rule": "!has(self.quantiles) || (0.5 in self.quantiles && "
            "self.quantiles.all(q, q > 0.0 && q < 1.0))",
            "message": "quantiles must lie strictly between 0 and 1 and include 0.5",
            "fieldPath": ".quantiles",
        },
    ],
}


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    """JSON Schema (pydantic) -> structural OpenAPI v3.0, recursively."""
    if isinstance(node, list):
        return [_convert(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        merged = {**copy.deepcopy(target), **node}
        return _convert(merged, defs)
    for key in ("title", "$defs"):
        node.pop(key, None)
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf")]
        nullable = any(o.get("type") == "null" for o in options)
        options = [o for o in options if o.get("type") != "null"]
        types = {o.get("type") for o in options}
        if types == {"integer", "string"}:
            node["x-kubernetes-int-or-string"] = True
        elif len(options) == 1:
            node = {**_convert(options[0], defs), **node}
        else:
            raise ValueError(f"cannot express anyOf {options} structurally")
        if nullable:
            node["nullable"] = True
    if node.get("default", ...) is None:
        node.pop("default")  # "no default": a null default would make the API server write nulls
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for bound in ("exclusiveMinimum", "exclusiveMaximum"):
        if isinstance(node.get(bound), int | float) and not isinstance(node.get(bound), bool):
            node["minimum" if bound == "exclusiveMinimum" else "maximum"] = node[bound]
            node[bound] = True
    for key in ("properties",):
        if key in node:
            node[key] = {k: _convert(v, defs) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _convert(node[key], defs)
    if node.get("additionalProperties") is False:
        node.pop(
            "additionalProperties"
        )  # structural schemas prune unknown fields; the model still forbids them
    if node.get("type") == "object" and "properties" in node and "additionalProperties" not in node:
        node.setdefault("type", "object")
    return node


def _add_cel(schema: dict[str, Any]) -> None:
    for path, rules in CEL_RULES.items():
        node = schema
        for part in path:
            node = node["properties"][part]
        node["x-kubernetes-validations"] = rules


def _object_defaults(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Give every nested section an explicit ``default: {}`` so the API server fills its inner defaults even when
    the section is left out (a real server defaults nested fields only where the parent object exists)."""
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel) and field.default_factory is not None:
            node = schema["properties"][field.alias or name]
            node["default"] = {}
            _object_defaults(sub, node)


def _spec_schema(model: type[BaseModel], description: str) -> dict[str, Any]:
    """A spec's schema from its pydantic model: converted to OpenAPI v3.0, with explicit section defaults."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _convert(raw, raw.get("$defs", {}))
    _object_defaults(model, schema)
    schema["type"] = "object"
    schema["description"] = description
    return schema


def spec_schema() -> dict[str, Any]:
    schema = _spec_schema(
        TrainingRunSpec,
        "What to train (symbol, data, model, training, checkpoint) and where (cluster fields).",
    )
    _add_cel(schema)
    return schema


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A status subresource's schema, generated from its pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _convert(raw, raw.get("$defs", {}))
    schema["type"] = "object"
    return schema


def status_schema() -> dict[str, Any]:
    """The status subresource's schema, generated from ``trainer.api.status.TrainingRunStatus``."""
    return _model_schema(TrainingRunStatus)


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Symbol", "type": "string", "jsonPath": ".spec.symbol"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Epoch", "type": "string", "jsonPath": ".status.progress.epochDisplay"},
    {"name": "Val-Loss", "type": "number", "jsonPath": ".status.progress.valLoss"},
    {"name": "Best", "type": "number", "jsonPath": ".status.progress.bestValLoss"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Profile", "type": "string", "jsonPath": ".spec.profile", "priority": 1},
    {"name": "MASE", "type": "number", "jsonPath": ".status.metrics.valMase", "priority": 1},
    {"name": "Restarts", "type": "integer", "jsonPath": ".status.restarts", "priority": 1},
    {"name": "Workers", "type": "integer", "jsonPath": ".spec.workers", "priority": 1},
    {"name": "Folds", "type": "string", "jsonPath": ".status.foldsDisplay", "priority": 1},
    {"name": "Job", "type": "string", "jsonPath": ".status.jobName", "priority": 1},
]


def _crd(
    plural: str,
    kind: str,
    short: str,
    description: str,
    spec: dict[str, Any],
    status: dict[str, Any],
    columns: list[dict[str, Any]],
) -> dict[str, Any]:
    """A namespaced v1 CRD of the group with one served, stored version and a status subresource."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{API_GROUP}"},
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
                "shortNames": [short],
                "categories": ["ml"],
            },
            "versions": [
                {
                    "name": API_VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    description = "A training run of a multi-step crypto price forecaster."
    return _crd(PLURAL, KIND, "tr", description, spec_schema(), status_schema(), PRINTER_COLUMNS)


# --- TrainingSweep ---------------------------------------------------------------------------------------------


def _run_template(template: dict[str, Any]) -> None:
    """A TrainingRun spec inside another resource's spec: its defaults, and those CEL rules that compare no old
    object (a template has none)."""
    _object_defaults(TrainingRunSpec, template)
    template["type"] = "object"
    for path, rules in CEL_RULES.items():
        kept = [r for r in rules if "oldSelf" not in r["rule"]]
        node = template
        for part in path:
            node = node["properties"][part]
        if kept:
            node["x-kubernetes-validations"] = kept


def sweep_spec_schema() -> dict[str, Any]:
    """The TrainingSweep spec's schema: ``template`` is the TrainingRun spec's (its defaults and those CEL rules
    that compare no old object), so a template is refused at ``kubectl apply`` exactly as a run would be."""
    schema = _spec_schema(
        TrainingSweepSpec,
        "A search over TrainingRun specs: a template, the parameters to vary, the objective.",
    )
    _run_template(schema["properties"]["template"])
    return schema


def sweep_status_schema() -> dict[str, Any]:
    return _model_schema(TrainingSweepStatus)


SWEEP_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Trials", "type": "string", "jsonPath": ".status.trialsDisplay"},
    {"name": "Running", "type": "integer", "jsonPath": ".status.running"},
    {"name": "Best", "type": "string", "jsonPath": ".status.best.name"},
    {"name": "Objective", "type": "number", "jsonPath": ".status.best.objective"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase", "priority": 1},
    {"name": "Algorithm", "type": "string", "jsonPath": ".spec.algorithm", "priority": 1},
    {"name": "Metric", "type": "string", "jsonPath": ".spec.objective.metric", "priority": 1},
]


def build_sweep_crd() -> dict[str, Any]:
    description = "A hyper-parameter search: TrainingRuns from a template, ranked by a metric."
    spec, status = sweep_spec_schema(), sweep_status_schema()
    return _crd(SWEEP_PLURAL, SWEEP_KIND, "tsw", description, spec, status, SWEEP_PRINTER_COLUMNS)


# --- TrainingSchedule ------------------------------------------------------------------------------------------


def schedule_spec_schema() -> dict[str, Any]:
    """The TrainingSchedule spec's schema: ``template.spec`` is the TrainingRun spec's, as a sweep's template. The
    cron expression and the time zone are checked by the operator (``trainer.api.schedule``), not here."""
    schema = _spec_schema(
        TrainingScheduleSpec, "Retraining on a cron schedule: a TrainingRun per tick, with CronJob's rules."
    )
    template = schema["properties"]["template"]
    _object_defaults(RunTemplate, template)
    _run_template(template["properties"]["spec"])
    return schema


SCHEDULE_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Suspend", "type": "boolean", "jsonPath": ".spec.suspend"},
    {"name": "Active", "type": "integer", "jsonPath": ".status.activeCount"},
    {"name": "Last Schedule", "type": "date", "jsonPath": ".status.lastScheduleTime"},
    {"name": "Current", "type": "number", "jsonPath": ".status.currentModel.value"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Metric", "type": "string", "jsonPath": ".status.currentModel.metric", "priority": 1},
    {"name": "Model-Run", "type": "string", "jsonPath": ".status.currentModel.run", "priority": 1},
    {"name": "Time-Zone", "type": "string", "jsonPath": ".spec.timeZone", "priority": 1},
    {"name": "Next", "type": "date", "jsonPath": ".status.nextScheduleTime", "priority": 1},
]


def build_schedule_crd() -> dict[str, Any]:
    description = "Scheduled retraining: TrainingRuns on a cron schedule, keeping the better model."
    spec, status = schedule_spec_schema(), _model_schema(TrainingScheduleStatus)
    return _crd(SCHEDULE_PLURAL, SCHEDULE_KIND, "tsc", description, spec, status, SCHEDULE_PRINTER_COLUMNS)


def render_schedule() -> str:
    header = (
        "# Generated by `python -m trainop.crd --schedule` from trainer/api/schedule.py (its template: "
        "trainer/api/spec.py). Do not edit by hand.\n"
    )
    return header + yaml.dump(build_schedule_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=120)


def render_sweep() -> str:
    header = (
        "# Generated by `python -m trainop.crd --sweep` from trainer/api/sweep.py (its template: trainer/api/spec.py)."
        " Do not edit by hand.\n"
    )
    return header + yaml.dump(build_sweep_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=120)


def render() -> str:
    header = "# Generated by `python -m trainop.crd` from trainer/api/spec.py and trainer/api/status.py. Do not edit by hand.\n"
    return header + yaml.dump(build_crd(), Dumper=_NoAliasDumper, sort_keys=False, width=120)


class _NoAliasDumper(yaml.SafeDumper):
    """Repeated sub-schemas are written out in full (no &id001 anchors): easier to read and diff."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.stdout.write(
        render_sweep() if "--sweep" in args else render_schedule() if "--schedule" in args else render()
    )
