"""The one model of a TrainingSweep: a hyper-parameter search over TrainingRuns (``spec``), and what the operator
reports about it (``status``: the trials, a leaderboard, the best run).

Why here, beside the TrainingRun models and torch-free: the operator (which validates a sweep before it creates any
child run), the CRD (generated from these models by ``trainop.crd``) and whoever reads a sweep's status must agree
on every key. ``spec.template`` *is* ``TrainingRunSpec``, so every bound, enum and default of a run holds for the
template, and a sweep cannot drift from the runs it creates.

Why ``sweep_problems`` besides the model: pydantic checks each field on its own, but a parameter is a *path into
the template* with values to put there. Whether ``training.lr`` names a field, and whether ``learningRate: 0``
still makes a valid run, is only answered by walking the run model and validating the template with each value
applied -- which this module does before any child exists, one line per problem, each naming the parameter
(``spec.parameters[1].path: 'training.lr' is not a field of a TrainingRun spec; e.g. training.learningRate``).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import re
import types
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, Field, ValidationError, WithJsonSchema, field_validator, model_validator

from trainer.api.cluster import cluster_problems
from trainer.api.manifest import SpecError, format_errors, parse_owner_spec
from trainer.api.spec import TrainingRunSpec, _Model
from trainer.api.status import Condition, Metrics, Number, Phase, Timestamp, _Status, parse_lenient

SWEEP_KIND = "TrainingSweep"
SWEEP_PLURAL = "trainingsweeps"
MAX_TRIALS = 1000  # child names are <sweep>-tNNN
MAX_NAME = 63  # the sweep's name is a label value on every child
LEADERBOARD_SIZE = 5
#: status.metrics keys a sweep can optimise: the numeric (float) metrics of a TrainingRun.
OBJECTIVE_METRICS = tuple(
    f.alias or n
    for n, f in Metrics.model_fields.items()
    if set(get_args(f.annotation)) == {float, type(None)}
)
PATH_PATTERN = r"^[a-z][A-Za-z0-9]*(\.[a-z][A-Za-z0-9]*)*$"

#: A value put into the template: any JSON (a number, a string, a list such as quantiles).
ParamValue = Annotated[Any, WithJsonSchema({"x-kubernetes-preserve-unknown-fields": True})]
#: A trial's parameters: template path -> value.
Params = Annotated[
    dict[str, Any], WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True})
]


class Parameter(_Model):
    """One dimension of the search: a template field and the values it takes (a list: grid points or choices;
    a range: low..high, sampled by random and tpe)."""

    path: str = Field(
        max_length=253,
        pattern=PATH_PATTERN,
        description="A field of the template, camelCase as in a TrainingRun, e.g. training.learningRate.",
    )
    values: list[ParamValue] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_TRIALS,
        description="The values to try (grid), or to choose from (random, tpe).",
    )
    low: float | None = Field(default=None, description="A range's lower bound (random, tpe).")
    high: float | None = Field(default=None, description="A range's upper bound, included.")
    log: bool = Field(default=False, description="Sample the range on a log scale (low > 0).")
    type: Literal["float", "int"] = Field(default="float", description="The range's values: float or int.")
    step: float | None = Field(default=None, gt=0, description="Only multiples of step above low.")

    @model_validator(mode="after")
    def _one_kind(self) -> Parameter:
        if self.values is not None:
            if self.low is not None or self.high is not None or self.step is not None or self.log:
                raise ValueError("give either values or a range (low, high, log, step), not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give values: [...] or a range with both low and high")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be less than high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"log: true needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log and step do not combine; give one of them")
        bounds = (self.low, self.high, self.step if self.step is not None else 1.0)
        if self.type == "int" and not all(float(b).is_integer() for b in bounds):
            raise ValueError("type int needs whole-number low, high and step")
        return self

    def bounds(self) -> tuple[float | int, float | int]:
        """(low, high) as the range's type."""
        low, high = float(self.low or 0), float(self.high or 0)
        return (int(low), int(high)) if self.type == "int" else (low, high)


class Objective(_Model):
    """What a trial scores: a key of its TrainingRun's ``status.metrics``, and which way is better."""

    metric: str = Field(
        default="valMase",
        description="A numeric key of a TrainingRun's status.metrics, e.g. valMase or pinball.",
        json_schema_extra={"enum": list(OBJECTIVE_METRICS)},
    )
    direction: Literal["minimize", "maximize"] = "minimize"

    @field_validator("metric")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in OBJECTIVE_METRICS:
            raise ValueError(
                f"'{v}' is not a numeric key of a TrainingRun's status.metrics; one of "
                + ", ".join(OBJECTIVE_METRICS)
            )
        return v


class TrainingSweepSpec(_Model):
    """``TrainingSweep.spec``: a TrainingRun template, the parameters to vary in it, how to choose the next trial,
    and what to optimise."""

    template: TrainingRunSpec = Field(description="The TrainingRun spec every trial starts from.")
    parameters: list[Parameter] = Field(min_length=1, max_length=32, description="The search space.")
    algorithm: Literal["grid", "random", "tpe"] = Field(
        default="grid",
        description="grid: every combination of the values lists, in order; random and tpe: optuna samplers "
        "seeded by seed (tpe learns from the finished trials).",
    )
    objective: Objective = Field(default_factory=Objective)
    parallelism: int = Field(
        default=2, ge=1, le=100, description="Trials whose runs have not finished, at most."
    )
    max_trials: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRIALS,
        description="Trials in all; empty: the grid's size (required for random and tpe).",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="Seeds the random and tpe samplers.")


# --- parameter paths -------------------------------------------------------------------------------------------


def _section(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (``WalkForwardSpec | None`` -> WalkForwardSpec), or None for a leaf."""
    options = get_args(annotation) if get_origin(annotation) in (Union, types.UnionType) else (annotation,)
    return next((a for a in options if isinstance(a, type) and issubclass(a, BaseModel)), None)


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {f.alias or n: f.annotation for n, f in model.model_fields.items()}


def leaf_paths(model: type[BaseModel] = TrainingRunSpec, prefix: str = "") -> Iterator[str]:
    """Every path a parameter may name: the fields of the run model that are not sections."""
    for name, annotation in _fields(model).items():
        sub = _section(annotation)
        if sub is None:
            yield prefix + name
        else:
            yield from leaf_paths(sub, f"{prefix}{name}.")


def _initials(name: str) -> str:
    return "".join(w[0] for w in re.findall(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])", name)).lower()


def _suggest(parts: list[str], valid: int) -> str:
    """A real field close to the bad path: in the deepest valid section, by initials (lr -> learningRate) or
    spelling; else any field spelt alike; else training.learningRate."""
    prefix = ".".join(parts[:valid])
    leaves = list(leaf_paths())
    near = [p for p in leaves if not prefix or p.startswith(prefix + ".")]
    names = {p[len(prefix) + 1 if prefix else 0 :].split(".")[0]: p for p in near}
    if valid == len(parts):  # a section: one of its fields
        return "training.learningRate" if "training.learningRate" in near else near[0]
    wrong = parts[valid]
    by_initials = [p for n, p in names.items() if _initials(n) == wrong.lower()]
    if by_initials:
        return by_initials[0]
    close = difflib.get_close_matches(wrong, list(names), n=1, cutoff=0.6)
    if close:
        return names[close[0]]
    close = difflib.get_close_matches(".".join(parts), leaves, n=1, cutoff=0.6)
    return close[0] if close else "training.learningRate"


def path_problem(path: str) -> str | None:
    """Why ``path`` does not name a field of a TrainingRun spec, or None."""
    parts = path.split(".")
    model: type[BaseModel] | None = TrainingRunSpec
    for i, part in enumerate(parts):
        fields = _fields(model) if model is not None else {}
        if part not in fields:
            return f"'{path}' is not a field of a TrainingRun spec; e.g. {_suggest(parts, i)}"
        model = _section(fields[part])
        if model is not None and i == len(parts) - 1:
            return f"'{path}' is a section of a TrainingRun spec, not a field; e.g. {_suggest(parts, i + 1)}"
    return None


def apply_params(template: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the raw template with each ``path: value`` set (sections created as needed)."""
    doc = copy.deepcopy(dict(template))
    for path, value in params.items():
        *sections, leaf = path.split(".")
        node = doc
        for part in sections:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = copy.deepcopy(value)
    return doc


def _indexed(lines: list[str]) -> list[str]:
    """pydantic's ``parameters.1.path`` as ``parameters[1].path``."""
    out = []
    for line in lines:
        loc, sep, message = line.partition(": ")
        out.append(re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", loc) + sep + message)
    return out


def template_problems(doc: Mapping[str, Any], prefix: str = "spec.template") -> list[str]:
    """Why ``doc`` is not a TrainingRun spec that can run in a cluster (empty: it is)."""
    try:
        spec = TrainingRunSpec.model_validate(dict(doc))
    except ValidationError as err:
        return _indexed(format_errors(err, TrainingRunSpec, prefix))
    return cluster_problems(spec, prefix)


# --- the whole spec --------------------------------------------------------------------------------------------


def grid_size(spec: TrainingSweepSpec) -> int:
    return math.prod(len(p.values or ()) for p in spec.parameters)


def total_trials(spec: TrainingSweepSpec) -> int:
    """How many trials the sweep runs: maxTrials, at most the grid's size for grid."""
    if spec.algorithm == "grid":
        return min(spec.max_trials or MAX_TRIALS, grid_size(spec))
    return spec.max_trials or 0


def grid_point(spec: TrainingSweepSpec, index: int) -> dict[str, Any]:
    """Point ``index`` of the grid, in ``itertools.product`` order (the last parameter varies fastest)."""
    point: dict[str, Any] = {}
    for param in reversed(spec.parameters):
        values = param.values or [None]
        index, digit = divmod(index, len(values))
        point[param.path] = values[digit]
    return {p.path: point[p.path] for p in spec.parameters}


def search_hash(spec: TrainingSweepSpec) -> str:
    """What the trials' parameters are derived from (parameters, algorithm, objective, seed; not the template or
    the limits), hashed: written with the first trial, so that a later change of it is noticed."""
    parts = spec.model_dump(
        by_alias=True, mode="json", include={"parameters", "algorithm", "objective", "seed"}
    )
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _value_lines(i: int, param: Parameter, template: Mapping[str, Any]) -> list[str]:
    where = f"spec.parameters[{i}]"
    tried: list[tuple[str, Any]] = (
        [(f"{where}.values[{j}]", v) for j, v in enumerate(param.values)]
        if param.values is not None
        else [(f"{where}.low", param.bounds()[0]), (f"{where}.high", param.bounds()[1])]
    )
    lines = []
    for at, value in tried:
        found = template_problems(apply_params(template, {param.path: value}))
        if found:
            lines.append(f"{at}: {json.dumps(value)} makes the template invalid: {'; '.join(found)}")
    return lines


def sweep_problems(spec: TrainingSweepSpec, template: Mapping[str, Any]) -> list[str]:
    """What the model alone cannot see: the algorithm's needs, every path a field, every value (and each grid
    point) a valid run. ``template`` is the raw ``spec.template``, into which the values are put."""
    problems = template_problems(template)
    template_ok = not problems
    if spec.algorithm != "grid" and spec.max_trials is None:
        problems.append(f"spec.maxTrials: required for algorithm {spec.algorithm} (how many trials to run)")
    seen: dict[str, int] = {}
    for i, param in enumerate(spec.parameters):
        if spec.algorithm == "grid" and param.values is None:
            problems.append(
                f"spec.parameters[{i}]: algorithm grid needs a values list; give values: [...], or use "
                "algorithm random or tpe for a range"
            )
        if param.path in seen:
            problems.append(
                f"spec.parameters[{i}].path: '{param.path}' repeats spec.parameters[{seen[param.path]}]"
            )
            continue
        seen[param.path] = i
        problem = path_problem(param.path)
        if problem:
            problems.append(f"spec.parameters[{i}].path: {problem}")
        elif template_ok:
            problems += _value_lines(i, param, template)
    if problems or spec.algorithm != "grid":
        return problems
    if spec.max_trials is None and grid_size(spec) > MAX_TRIALS:
        return [
            f"spec.maxTrials: the grid has {grid_size(spec)} points, more than {MAX_TRIALS}; set maxTrials"
        ]
    for k in range(total_trials(spec)):  # values valid alone may still clash (hiddenSize vs attentionHeads)
        point = grid_point(spec, k)
        found = template_problems(apply_params(template, point))
        if found:
            problems.append(
                f"spec.parameters: grid point {k} {json.dumps(point)} makes the template invalid: {found[0]}"
            )
            if len(problems) >= 3:
                break
    return problems


def parse_sweep(raw: Any, name: str) -> tuple[TrainingSweepSpec, dict[str, Any]]:
    """A sweep's ``spec`` -> (model, raw template); raises SpecError with every problem, each naming its field."""
    source = f"TrainingSweep {name}"
    problems = []
    if len(name) > MAX_NAME:
        problems.append(f"metadata.name: must be at most {MAX_NAME} characters (a label of every trial run)")
    spec = parse_owner_spec(TrainingSweepSpec, raw, source, problems, _indexed)
    problems += sweep_problems(spec, raw["template"])
    if problems:
        raise SpecError(source, problems)
    return spec, dict(raw["template"])


# --- status ----------------------------------------------------------------------------------------------------

SweepPhase = Literal["Pending", "Running", "Succeeded", "Failed"]


class SweepTrial(_Status):
    """One trial: its parameters (recorded before its run is created) and what its run reported."""

    index: int = Field(ge=0)
    name: str
    params: Params
    phase: Phase | None = None
    objective: Number = None
    checkpoint: str | None = None
    message: str | None = Field(default=None, max_length=1024)


class LeaderboardEntry(_Status):
    rank: int = Field(ge=1)
    index: int = Field(ge=0)
    name: str
    params: Params
    objective: Number = None
    checkpoint: str | None = Field(default=None, description="The run's status.checkpoint.best.")


class SweepBest(_Status):
    index: int = Field(ge=0)
    name: str
    params: Params
    objective: Number = None
    checkpoint: str | None = None


class TrainingSweepStatus(_Status):
    """Written by the operator only: the trials (the sweep's state), the leaderboard and best derived from them."""

    observed_generation: int | None = None
    phase: SweepPhase | None = None
    reason: str | None = None
    message: str | None = None
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    search_hash: str | None = None
    trials: list[SweepTrial] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["index"]},
    )
    leaderboard: list[LeaderboardEntry] | None = None
    best: SweepBest | None = None
    trials_done: int | None = None
    trials_total: int | None = None
    # "3/4" for `kubectl get tsw` (a JSONPath cannot compute it).
    trials_display: str | None = None
    running: int | None = None
    start_time: Timestamp = None
    completion_time: Timestamp = None
    kopf: Annotated[
        dict[str, Any] | None,
        WithJsonSchema({"type": "object", "x-kubernetes-preserve-unknown-fields": True}),
    ] = None

    @classmethod
    def parse(cls, raw: Any) -> TrainingSweepStatus:
        """Lenient, as ``TrainingRunStatus.parse``: what does not fit the model is left out; never raises."""
        return parse_lenient(cls, raw)


def describe_params(params: Mapping[str, Any], names: Sequence[str] | None = None) -> str:
    """``training.learningRate=0.001, model.hiddenSize=64`` (in ``names`` order when given)."""
    keys = list(names) if names else list(params)
    return ", ".join(f"{k}={json.dumps(params[k])}" for k in keys if k in params)
