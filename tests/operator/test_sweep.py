"""TrainingSweeps (``trainer.api.sweep``, ``trainop.sweep``), table-driven: which specs are refused and with which
line; the parameters of each trial (grid order, seeded random, TPE rebuilt from the records); what a child run's
status means for its trial; the decision for each state of a sweep; a sweep walked through an operator killed
after every step; the generated CRD."""

from __future__ import annotations

import copy
import json
import os
import pathlib
import random
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import jsonschema
import pytest
import yaml
from trainop import crd
from trainop import sweep as sw
from trainop.status import Event

from tests.operator.test_crd import _model_paths, _schema_paths, to_json_schema
from trainer.api.manifest import SpecError
from trainer.api.sweep import (
    SweepTrial,
    TrainingSweepSpec,
    TrainingSweepStatus,
    grid_point,
    parse_sweep,
    path_problem,
    total_trials,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
TEMPLATE = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())["spec"]
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "sweep.yaml").read_text())
LR, HIDDEN = "training.learningRate", "model.hiddenSize"
GRID = [{"path": LR, "values": [0.001, 0.003]}, {"path": HIDDEN, "values": [32, 64]}]


def sweep_body(name: str = "demo", status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingSweep",
        "metadata": {"name": name, "namespace": "ml", "uid": "sweep-uid", "generation": 1},
        "spec": {"template": copy.deepcopy(TEMPLATE), "parameters": copy.deepcopy(GRID), **spec},
    }
    if status is not None:
        body["status"] = status
    return body


def plan_of(**spec: Any) -> sw.Plan:
    return sw.Plan.of(sweep_body(**spec), "s3://checkpoints/runs")


def problems(**spec: Any) -> list[str]:
    with pytest.raises(SpecError) as err:
        plan_of(**spec)
    return err.value.problems


# --- validation ------------------------------------------------------------------------------------------------

# (case, spec fields, lines expected (each a prefix of one problem))
INVALID = [
    (
        "unknown-path-names-a-real-field",
        {"parameters": [GRID[0], {"path": "training.lr", "values": [1]}]},
        [
            "spec.parameters[1].path: 'training.lr' is not a field of a TrainingRun spec; e.g. training.learningRate"
        ],
    ),
    (
        "misspelt-path",
        {"parameters": [{"path": "model.hiddenSze", "values": [32]}]},
        [
            "spec.parameters[0].path: 'model.hiddenSze' is not a field of a TrainingRun spec; e.g. model.hiddenSize"
        ],
    ),
    (
        "section-is-not-a-field",
        {"parameters": [{"path": "training", "values": [{}]}]},
        [
            "spec.parameters[0].path: 'training' is a section of a TrainingRun spec, not a field; e.g. training.learningRate"
        ],
    ),
    (
        "value-that-makes-an-invalid-run",
        {"parameters": [{"path": LR, "values": [0.001, 0]}]},
        [
            "spec.parameters[0].values[1]: 0 makes the template invalid: spec.template.training.learningRate: Input should be greater than 0"
        ],
    ),
    (
        "range-end-outside-the-field's-bounds",
        {
            "algorithm": "random",
            "maxTrials": 3,
            "parameters": [{"path": HIDDEN, "type": "int", "low": 8, "high": 1024}],
        },
        [
            "spec.parameters[0].high: 1024 makes the template invalid: spec.template.model.hiddenSize: Input should be less than or equal to 512"
        ],
    ),
    (
        "grid-points-that-clash",
        {
            "parameters": [
                {"path": HIDDEN, "values": [32, 36]},
                {"path": "model.attentionHeads", "values": [4, 8]},
            ]
        },
        [
            'spec.parameters: grid point 3 {"model.hiddenSize": 36, "model.attentionHeads": 8} makes the template invalid: spec.template.model: hiddenSize (36) must be divisible by attentionHeads (8)'
        ],
    ),
    (
        "grid-needs-values",
        {"parameters": [{"path": LR, "low": 0.001, "high": 0.01}]},
        ["spec.parameters[0]: algorithm grid needs a values list"],
    ),
    ("random-needs-max-trials", {"algorithm": "random"}, ["spec.maxTrials: required for algorithm random"]),
    (
        "repeated-path",
        {"parameters": [GRID[0], GRID[0]]},
        ["spec.parameters[1].path: 'training.learningRate' repeats spec.parameters[0]"],
    ),
    (
        "values-and-range",
        {"parameters": [{"path": LR, "values": [0.1], "low": 0.1, "high": 0.2}]},
        ["spec.parameters[0]: give either values or a range"],
    ),
    (
        "empty-range",
        {"algorithm": "tpe", "maxTrials": 2, "parameters": [{"path": LR, "low": 0.1, "high": 0.1}]},
        ["spec.parameters[0]: low (0.1) must be less than high (0.1)"],
    ),
    (
        "log-from-zero",
        {
            "algorithm": "tpe",
            "maxTrials": 2,
            "parameters": [{"path": LR, "low": 0, "high": 0.1, "log": True}],
        },
        ["spec.parameters[0]: log: true needs low > 0"],
    ),
    (
        "int-range-of-fractions",
        {
            "algorithm": "tpe",
            "maxTrials": 2,
            "parameters": [{"path": HIDDEN, "type": "int", "low": 8.5, "high": 64}],
        },
        ["spec.parameters[0]: type int needs whole-number"],
    ),
    (
        "unknown-metric",
        {"objective": {"metric": "mase"}},
        [
            "spec.objective.metric: 'mase' is not a numeric key of a TrainingRun's status.metrics; one of valMae, valMase"
        ],
    ),
    (
        "unknown-field",
        {"paralelism": 2},
        ["spec.paralelism: unknown field; allowed: template, parameters, algorithm"],
    ),
    (
        "invalid-template",
        {"template": {**TEMPLATE, "symbols": ["SOL", "SOL"]}},
        ["spec.template.symbols: symbols must not repeat"],
    ),
    (
        "template-checkpoint-on-the-pod",
        {"template": {**TEMPLATE, "checkpoint": {"uri": "/tmp/ckpt"}}},
        ["spec.template.checkpoint.uri: '/tmp/ckpt' is the pod's own filesystem"],
    ),
]


@pytest.mark.parametrize(("case", "spec", "expected"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_sweeps_are_refused_naming_the_field(
    case: str, spec: dict[str, Any], expected: list[str]
) -> None:
    found = problems(**spec)
    for line in expected:
        assert any(p.startswith(line) for p in found), f"{line!r} not in {found}"


def test_a_long_name_is_refused() -> None:
    body = sweep_body("x" * 64)
    with pytest.raises(SpecError) as err:
        sw.Plan.of(body, "s3://checkpoints/runs")
    assert err.value.problems[0].startswith("metadata.name: must be at most 63 characters")


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        (LR, None),
        ("walkForward.refitEvery", None),  # through an optional section
        ("model.quantiles", None),  # a list-valued field
        ("resources.limits.memory", "'resources.limits.memory' is not a field of a TrainingRun spec"),
        ("training.wd", "'training.wd' is not a field of a TrainingRun spec; e.g. training.weightDecay"),
        ("bogus", "'bogus' is not a field of a TrainingRun spec; e.g. training.learningRate"),
    ],
)
def test_parameter_paths(path: str, problem: str | None) -> None:
    found = path_problem(path)
    assert found == problem if problem is None else (found or "").startswith(problem)


def test_the_sample_is_valid() -> None:
    plan = sw.Plan.of(SAMPLE, "s3://checkpoints/runs")
    assert (plan.spec.algorithm, plan.total, plan.spec.parallelism) == ("tpe", 24, 4)


# --- the parameters of trial k ---------------------------------------------------------------------------------


def test_grid_order_size_and_max_trials() -> None:
    spec = plan_of().spec
    assert total_trials(spec) == 4
    assert [grid_point(spec, k) for k in range(4)] == [
        {LR: 0.001, HIDDEN: 32},
        {LR: 0.001, HIDDEN: 64},
        {LR: 0.003, HIDDEN: 32},
        {LR: 0.003, HIDDEN: 64},
    ]
    assert plan_of(maxTrials=3).total == 3
    assert plan_of(maxTrials=10).total == 4  # at most the grid


RANGES = [
    {"path": LR, "low": 0.0001, "high": 0.1, "log": True},
    {"path": HIDDEN, "type": "int", "low": 16, "high": 128, "step": 16},
    {"path": "model.quantiles", "values": [[0.1, 0.5, 0.9], [0.05, 0.5, 0.95]]},
]


def finished(plan: sw.Plan, index: int, params: dict[str, Any], objective: float | None) -> SweepTrial:
    phase = "Failed" if objective is None else "Succeeded"
    return SweepTrial(
        index=index, name=sw.trial_name(plan.name, index), params=params, phase=phase, objective=objective
    )


@pytest.mark.parametrize("algorithm", ["random", "tpe"])
def test_sampled_trials_are_in_range_and_a_function_of_the_records(algorithm: str) -> None:
    plan = plan_of(algorithm=algorithm, maxTrials=12, seed=7, parameters=RANGES)
    history: list[SweepTrial] = []
    for k in range(12):
        params = sw.suggest(plan, k, history)
        assert params == sw.suggest(plan, k, copy.deepcopy(history))  # same records, same parameters
        assert 0.0001 <= params[LR] <= 0.1 and isinstance(params[LR], float)
        assert params[HIDDEN] in range(16, 129, 16) and isinstance(params[HIDDEN], int)
        assert params["model.quantiles"] in RANGES[2]["values"]
        objective = None if k == 3 else abs(params[LR] - 0.003) + params[HIDDEN] / 1000
        history.append(finished(plan, k, params, objective))
    assert len({json.dumps(t.params, sort_keys=True) for t in history}) == 12  # a fresh seed per trial
    assert sw.suggest(plan_of(algorithm=algorithm, maxTrials=12, seed=8, parameters=RANGES), 0, []) != (
        history[0].params
    )


def test_random_ignores_results_and_tpe_learns_from_them_after_its_start() -> None:
    space = {"maxTrials": 12, "seed": 7, "parameters": RANGES}
    rnd, tpe = plan_of(algorithm="random", **space), plan_of(algorithm="tpe", **space)
    assert sw.startup_trials(12) == 3
    good = [finished(tpe, k, sw.suggest(tpe, k, []), 0.1 * k) for k in range(3)]
    bad = [t.model_copy(update={"objective": 1.0 - 0.1 * t.index}) for t in good]
    assert sw.suggest(rnd, 5, good) == sw.suggest(rnd, 5, bad) == sw.suggest(rnd, 5, [])
    assert [sw.suggest(tpe, k, []) for k in range(3)] == [t.params for t in good]  # the random start
    assert sw.suggest(tpe, 3, good) != sw.suggest(tpe, 3, bad)  # then the results count
    running = [t.model_copy(update={"phase": "Running", "objective": None}) for t in good]
    assert sw.suggest(tpe, 3, running) == sw.suggest(tpe, 3, copy.deepcopy(running))


def test_tpe_is_the_same_in_another_process() -> None:
    """No dependence on the process: hash seeds, how many samples were drawn before."""
    plan = plan_of(algorithm="tpe", maxTrials=12, seed=3, parameters=RANGES)
    history = [finished(plan, k, sw.suggest(plan, k, []), 0.5 - 0.1 * k) for k in range(4)]
    here = sw.suggest(plan, 4, history)
    script = (
        "import json, sys\n"
        "from tests.operator.test_sweep import RANGES, plan_of\n"
        "from trainop import sweep as sw\n"
        "from trainer.api.sweep import SweepTrial\n"
        "plan = plan_of(algorithm='tpe', maxTrials=12, seed=3, parameters=RANGES)\n"
        "history = [SweepTrial.model_validate(t) for t in json.load(sys.stdin)]\n"
        "print(json.dumps(sw.suggest(plan, 4, history)))\n"
    )
    env = {
        **os.environ,
        "PYTHONHASHSEED": "12345",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "operator")]),
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps([t.dump() for t in history]),
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
        timeout=120,
    )
    assert json.loads(out.stdout) == here


# --- a child run's status -> its trial ---------------------------------------------------------------------------

PENDING = SweepTrial(index=2, name="demo-t002", params={LR: 0.001}, phase="Pending")
DONE = PENDING.model_copy(update={"phase": "Succeeded", "objective": 0.8})


def run(phase: str | None, **status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "demo-t002"}, "status": {"phase": phase, **status} if phase else {}}


# (case, recorded trial, child, phase, objective, checkpoint, message prefix)
OBSERVED = [
    ("no-run-yet", PENDING, None, "Pending", None, None, None),
    ("finished-run-deleted-stays-finished", DONE, None, "Succeeded", 0.8, None, None),
    ("created-not-started", PENDING, run(None), "Pending", None, None, None),
    ("running", PENDING, run("Running", checkpoint={"latest": "s3://b/e1.pt", "best": "s3://b/best.pt"}), "Running", None, "s3://b/best.pt", None),
    (
        "succeeded-with-the-metric",
        PENDING, run("Succeeded", metrics={"valMase": 0.912345, "pinball": 0.1}, checkpoint={"best": "s3://b/best.pt"}),
        "Succeeded", 0.9123, "s3://b/best.pt", None,
    ),
    ("succeeded-without-the-metric", PENDING, run("Succeeded", metrics={"pinball": 0.1}), "Succeeded", None, None, "the run succeeded without status.metrics.valMase"),
    ("failed", PENDING, run("Failed", reason="NaNLoss", message="the loss became NaN"), "Failed", None, None, "NaNLoss: the loss became NaN"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "trial", "child", "phase", "objective", "checkpoint", "message"),
    OBSERVED,
    ids=[c[0] for c in OBSERVED],
)
def test_observe(
    case: str,
    trial: SweepTrial,
    child: dict[str, Any] | None,
    phase: str,
    objective: float | None,
    checkpoint: str | None,
    message: str | None,
) -> None:
    seen = sw.observe(trial, child, "valMase")
    assert (seen.index, seen.name, seen.params) == (trial.index, trial.name, trial.params)
    assert (seen.phase, seen.objective, seen.checkpoint) == (phase, objective, checkpoint)
    assert seen.message == message if message is None else (seen.message or "").startswith(message)


def test_leaderboard_order_ties_failures_and_direction() -> None:
    plan = plan_of()
    objectives = [0.9, None, 0.7, 0.7, 1.2, 0.8, 0.6]
    trials = [finished(plan, k, {LR: k}, v) for k, v in enumerate(objectives)]
    board = sw.leaderboard(trials, "minimize")
    assert [(e.rank, e.index, e.objective) for e in board] == [
        (1, 6, 0.6),
        (2, 2, 0.7),
        (3, 3, 0.7),
        (4, 5, 0.8),
        (5, 0, 0.9),
    ]
    assert [e.index for e in sw.leaderboard(trials, "maximize")] == [4, 0, 5, 2, 3]


# --- decisions ---------------------------------------------------------------------------------------------------


def trial(k: int, phase: str = "Pending", objective: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "index": k,
        "name": f"demo-t{k:03d}",
        "params": grid_point(plan_of().spec, k),
        "phase": phase,
    }
    if objective is not None:
        out["objective"] = objective
    return out


def child(k: int, phase: str | None = None, objective: float | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase} if phase else {}
    if objective is not None:
        status["metrics"] = {"valMase": objective}
        status["checkpoint"] = {"best": f"s3://checkpoints/runs/ml/demo-t{k:03d}/best.pt"}
    return {"metadata": {"name": f"demo-t{k:03d}"}, "status": status}


def recorded(*trials: dict[str, Any], search: str | None = None) -> dict[str, Any]:
    return {"trials": list(trials), "searchHash": search or plan_of().search, "phase": "Running"}


# (case, status, children, spec changes, trials recorded after (index: phase), runs to create, phase, reason)
STEPS = [
    ("new-sweep-records-and-creates-parallelism-trials", None, [], {}, {0: "Pending", 1: "Pending"}, [0, 1], "Running", "TrialsRunning"),
    ("restart-creates-a-recorded-trial-without-its-run", recorded(trial(0), trial(1)), [child(0)], {}, {0: "Pending", 1: "Pending"}, [1], "Running", "TrialsRunning"),
    ("running-trials-leave-no-room", recorded(trial(0), trial(1)), [child(0, "Running"), child(1)], {}, {0: "Running", 1: "Pending"}, [], "Running", "TrialsRunning"),
    ("a-finished-trial-makes-room-for-the-next", recorded(trial(0), trial(1)), [child(0, "Succeeded", 0.9), child(1, "Running")], {}, {0: "Succeeded", 1: "Running", 2: "Pending"}, [2], "Running", "TrialsRunning"),
    ("a-failed-trial-counts-as-done", recorded(trial(0), trial(1)), [child(0, "Failed"), child(1, "Failed")], {}, {0: "Failed", 1: "Failed", 2: "Pending", 3: "Pending"}, [2, 3], "Running", "TrialsRunning"),
    ("raised-parallelism-adds-trials", recorded(trial(0)), [child(0, "Running")], {"parallelism": 3}, {0: "Running", 1: "Pending", 2: "Pending"}, [1, 2], "Running", "TrialsRunning"),
    ("max-trials-stops-new-trials", recorded(trial(0, "Succeeded", 0.9), trial(1)), [child(0, "Succeeded", 0.9), child(1, "Running")], {"maxTrials": 2}, {0: "Succeeded", 1: "Running"}, [], "Running", "TrialsRunning"),
    ("a-finished-trial-whose-run-was-deleted-is-not-recreated", recorded(trial(0, "Succeeded", 0.9), trial(1)), [child(1, "Running")], {"maxTrials": 2}, {0: "Succeeded", 1: "Running"}, [], "Running", "TrialsRunning"),
    ("all-done-succeeds-with-the-best", recorded(*(trial(k) for k in range(4))), [child(0, "Succeeded", 0.9), child(1, "Failed"), child(2, "Succeeded", 0.7), child(3, "Succeeded", 0.8)], {}, {0: "Succeeded", 1: "Failed", 2: "Succeeded", 3: "Succeeded"}, [], "Succeeded", "Completed"),
    ("all-failed-fails", recorded(*(trial(k) for k in range(4))), [child(k, "Failed") for k in range(4)], {}, {k: "Failed" for k in range(4)}, [], "Failed", "AllTrialsFailed"),
    ("changed-search-space-fails-and-creates-nothing", recorded(trial(0), search="0123456789abcdef"), [], {}, {0: "Pending"}, [], "Failed", "SpecChanged"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("case", "status", "children", "spec", "after", "create", "phase", "reason"),
    STEPS,
    ids=[c[0] for c in STEPS],
)
def test_decide(
    case: str,
    status: dict[str, Any] | None,
    children: list[dict[str, Any]],
    spec: dict[str, Any],
    after: dict[int, str],
    create: list[int],
    phase: str,
    reason: str,
) -> None:
    body = sweep_body(status=copy.deepcopy(status), **spec)
    plan = sw.Plan.of(body, "s3://checkpoints/runs")
    decision = sw.decide(plan, body, {c["metadata"]["name"]: c for c in children}, T)
    written = TrainingSweepStatus.parse({**(status or {}), **decision.status})
    assert {t.index: t.phase for t in written.trials or []} == after
    assert [t.index for t in decision.create] == create
    assert [t.name for t in decision.create] == [f"demo-t{k:03d}" for k in create]
    assert (decision.phase, written.phase, written.reason) == (phase, phase, reason)
    assert written.running == sum(1 for p in after.values() if p not in ("Succeeded", "Failed"))
    for t in written.trials or []:
        assert t.params == grid_point(plan.spec, t.index)


def test_the_completed_status_and_its_event() -> None:
    children = [
        child(0, "Succeeded", 0.9),
        child(1, "Failed"),
        child(2, "Succeeded", 0.7),
        child(3, "Succeeded", 0.8),
    ]
    body = sweep_body(status=recorded(*(trial(k) for k in range(4))))
    decision = sw.decide(plan_of(), body, {c["metadata"]["name"]: c for c in children}, T)
    status = decision.status
    assert (status["trialsDone"], status["trialsTotal"], status["trialsDisplay"], status["running"]) == (
        4,
        4,
        "4/4",
        0,
    )
    assert [e["name"] for e in status["leaderboard"]] == ["demo-t002", "demo-t003", "demo-t000"]
    assert status["best"] == {
        "index": 2,
        "name": "demo-t002",
        "params": {LR: 0.003, HIDDEN: 32},
        "objective": 0.7,
        "checkpoint": "s3://checkpoints/runs/ml/demo-t002/best.pt",
    }
    assert status["completionTime"] == "2026-01-02T03:04:05Z"
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Running": "False",
        "Succeeded": "True",
        "Failed": "False",
    }
    message = (
        "4 trials done; best demo-t002: valMase 0.7 (training.learningRate=0.003, model.hiddenSize=32); "
        "checkpoint s3://checkpoints/runs/ml/demo-t002/best.pt"
    )
    assert decision.events == [Event("Normal", "Succeeded", message)]
    again = sweep_body(status={**body["status"], **status})
    repeat = sw.decide(plan_of(), again, {c["metadata"]["name"]: c for c in children}, T)
    assert repeat.status == {} and repeat.events == []  # no write, no second Event


def test_invalid_sweep_status_and_one_event() -> None:
    body = sweep_body(parameters=[GRID[0], {"path": "training.lr", "values": [1]}])
    with pytest.raises(SpecError) as err:
        sw.Plan.of(body, "s3://checkpoints/runs")
    decision = sw.invalid(body, err.value, T)
    message = "spec.parameters[1].path: 'training.lr' is not a field of a TrainingRun spec; e.g. training.learningRate"
    assert (decision.status["phase"], decision.status["reason"], decision.status["message"]) == (
        "Failed",
        "InvalidSpec",
        message,
    )
    assert decision.events == [Event("Warning", "InvalidSpec", message)]
    again = sweep_body(status=decision.status, parameters=body["spec"]["parameters"])
    assert sw.invalid(again, err.value, T).events == []


def test_an_invalid_sampled_trial_is_recorded_failed_without_a_run() -> None:
    heads = [
        {"path": HIDDEN, "type": "int", "low": 16, "high": 40},
        {"path": "model.attentionHeads", "values": [4, 8]},
    ]
    plan = plan_of(algorithm="random", maxTrials=6, parallelism=6, parameters=heads)
    decision = sw.decide(
        plan, sweep_body(algorithm="random", maxTrials=6, parallelism=6, parameters=heads), {}, T
    )
    trials = TrainingSweepStatus.parse(decision.status).trials or []
    bad = [t for t in trials if t.params[HIDDEN] % t.params["model.attentionHeads"]]
    assert len(trials) == 6 and bad, "the seed should sample a clash"
    assert all(t.phase == "Failed" and (t.message or "").startswith("invalid parameters:") for t in bad)
    assert sorted(t.index for t in decision.create) == sorted(t.index for t in trials if t not in bad)


# --- a sweep walked through an operator killed after every step --------------------------------------------------


@dataclass
class World:
    """The API: the sweep's status, its runs by name (created, then finished by the test); the Events posted."""

    body: dict[str, Any]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)

    def reconcile(self, plan: sw.Plan, crash: random.Random | None) -> None:
        """``sweep_handlers.reconcile``'s steps; ``crash`` kills the operator after any of them."""

        def killed(chance: float) -> bool:
            return crash is not None and crash.random() < chance

        decision = sw.decide(plan, self.body, self.runs, T)
        if killed(0.3):
            return  # before the status write
        status = {**(self.body.get("status") or {}), **copy.deepcopy(decision.status)}
        self.body["status"] = {k: v for k, v in status.items() if v is not None}
        for t in decision.create:
            if killed(0.2):
                return  # between the status write and a create
            if t.name not in self.runs:
                self.runs[t.name] = {**sw.child_run(plan, t), "status": {"phase": "Pending"}}
                self.events.append(sw.trial_created(t, [p.path for p in plan.spec.parameters]))
        self.events += decision.events


def score(params: dict[str, Any]) -> float:
    return round(abs(params[LR] - 0.003) * 100 + params.get(HIDDEN, 32) / 1000, 4)


def walk(body: dict[str, Any], seed: int | None) -> World:
    """Reconcile, finish the oldest running run, start the pending ones, repeat until the sweep is done; the
    operator is killed at steps drawn from ``seed`` (None: never)."""
    plan, world = sw.Plan.of(body, "s3://checkpoints/runs"), World(copy.deepcopy(body))
    crash = random.Random(seed) if seed is not None else None
    for _ in range(500):
        world.reconcile(plan, crash)
        if (world.body.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return world
        unfinished = [r for r in world.runs.values() if r["status"]["phase"] not in ("Succeeded", "Failed")]
        assert len(unfinished) <= plan.spec.parallelism
        running = [r for r in unfinished if r["status"]["phase"] == "Running"]
        if running:  # the trainer's metrics, then the phase
            params = json.loads(running[0]["metadata"]["annotations"][sw.PARAMS_ANNOTATION])
            running[0]["status"] = {"phase": "Succeeded", "metrics": {"valMase": score(params)}}
        for r in unfinished:
            if r["status"]["phase"] == "Pending":
                r["status"]["phase"] = "Running"
    raise AssertionError(f"the sweep did not finish: {world.body.get('status')}")


@pytest.mark.parametrize("algorithm", ["grid", "tpe"])
def test_killed_operators_neither_duplicate_nor_skip_a_trial(algorithm: str) -> None:
    spec: dict[str, Any] = {"parallelism": 2}
    if algorithm == "tpe":
        spec |= {"algorithm": "tpe", "maxTrials": 8, "seed": 5, "parameters": [
            {"path": LR, "low": 0.0005, "high": 0.01, "log": True},
            {"path": HIDDEN, "values": [16, 32, 64]},
        ]}  # fmt: skip
    body = sweep_body(**spec)
    total = 4 if algorithm == "grid" else 8
    for seed in range(12):
        world = walk(body, seed)
        status = TrainingSweepStatus.parse(world.body["status"])
        names = [f"demo-t{k:03d}" for k in range(total)]
        assert sorted(world.runs) == names
        assert [t.index for t in status.trials or []] == list(range(total))
        for t in status.trials or []:
            assert json.loads(world.runs[t.name]["metadata"]["annotations"][sw.PARAMS_ANNOTATION]) == t.params
            assert t.objective == score(t.params)
        assert [e.message.split(" ")[1] for e in world.events if e.reason == "TrialCreated"] == [
            str(k) for k in range(total)
        ]
        assert [e.reason for e in world.events if e.reason != "TrialCreated"] == ["Succeeded"]
        best = min(status.trials or [], key=lambda t: (t.objective or 0, t.index))
        assert status.best is not None and status.best.name == best.name
        if algorithm == "grid":
            assert [t.params for t in status.trials or []] == [
                grid_point(plan_of().spec, k) for k in range(4)
            ]


def test_with_parallelism_one_tpe_is_reproducible_despite_crashes() -> None:
    """One trial at a time: trial k always sees all of 0..k-1 finished, so crashes cannot change any parameter."""
    body = sweep_body(
        algorithm="tpe",
        maxTrials=6,
        seed=11,
        parallelism=1,
        parameters=[{"path": LR, "low": 0.0005, "high": 0.01}],
    )
    reference = [t["params"] for t in walk(body, None).body["status"]["trials"]]
    for seed in range(4):
        assert [t["params"] for t in walk(body, seed).body["status"]["trials"]] == reference


# --- children ----------------------------------------------------------------------------------------------------


def test_child_run_shape() -> None:
    plan = plan_of(template={**TEMPLATE, "checkpoint": {"uri": "s3://models/sweeps/demo/"}})
    t = SweepTrial(index=7, name=sw.trial_name("demo", 7), params={LR: 0.01, HIDDEN: 64}, phase="Pending")
    run = sw.child_run(plan, t)
    assert run["metadata"] == {
        "name": "demo-t007",
        "labels": {"cryptopredictor.dev/sweep": "demo", "cryptopredictor.dev/trial": "7"},
        "annotations": {
            "cryptopredictor.dev/trial-params": '{"model.hiddenSize": 64, "training.learningRate": 0.01}'
        },
    }
    assert run["spec"]["training"]["learningRate"] == 0.01 and run["spec"]["model"]["hiddenSize"] == 64
    assert run["spec"]["training"]["epochs"] == TEMPLATE["training"]["epochs"]
    assert run["spec"]["checkpoint"]["uri"] == "s3://models/sweeps/demo/demo-t007"  # never another trial's
    assert plan.template["checkpoint"]["uri"] == "s3://models/sweeps/demo/"  # the template is left as it was
    assert (
        sw.child_run(plan_of(), t)["spec"]["checkpoint"]["uri"] is None
    )  # the operator's prefix/<ns>/<trial>


@pytest.mark.parametrize("name", ["a" * 58, "a" * 59, "a" * 63])
def test_trial_names_fit_a_label(name: str) -> None:
    names = {sw.trial_name(name, k) for k in (0, 999)}
    assert len(names) == 2 and all(len(n) <= 63 and n.endswith(("-t000", "-t999")) for n in names)
    if len(name) <= 58:
        assert sw.trial_name(name, 0) == f"{name}-t000"


# --- the CRD -------------------------------------------------------------------------------------------------------


def sweep_schema() -> dict[str, Any]:
    return dict(crd.build_sweep_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_sweep_crd_files_are_generated() -> None:
    text = crd.render_sweep()
    assert (ROOT / "manifests" / "crd-sweep.yaml").read_text() == text, "run scripts/sync-manifests.sh"
    assert (ROOT / "charts" / "crypto-price-predictor" / "crds" / "trainingsweeps.yaml").read_text() == text


def test_sweep_schema_is_the_models() -> None:
    schema = sweep_schema()
    for model, node in (
        (TrainingSweepSpec, schema["properties"]["spec"]),
        (TrainingSweepStatus, schema["properties"]["status"]),
    ):
        assert _model_paths(model) == _schema_paths(node)
    template = schema["properties"]["spec"]["properties"]["template"]
    run_spec = crd.spec_schema()
    assert template["properties"] == run_spec["properties"]  # the TrainingRun spec's fields, bounds, defaults
    rules = [r["rule"] for r in template.get("x-kubernetes-validations", [])]
    assert rules and not any("oldSelf" in r for r in rules)  # a template has no old object to compare with
    names = crd.build_sweep_crd()["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "TrainingSweep",
        "trainingsweeps",
        ["tsw"],
    )
    columns = [
        c["name"]
        for c in crd.build_sweep_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
        if not c.get("priority")
    ]
    assert columns == ["Trials", "Running", "Best", "Objective", "Age"]


def test_the_sample_and_a_status_validate_against_the_schema() -> None:
    schema = to_json_schema(sweep_schema())
    body = sweep_body(status=recorded(*(trial(k) for k in range(4))))
    children = [
        child(0, "Succeeded", 0.9),
        child(1, "Failed"),
        child(2, "Succeeded", 0.7),
        child(3, "Succeeded", 0.8),
    ]
    body["status"] |= sw.decide(plan_of(), body, {c["metadata"]["name"]: c for c in children}, T).status
    for doc in (SAMPLE, body):
        jsonschema.validate(doc, schema)
    bad = copy.deepcopy(SAMPLE)
    bad["spec"]["algorithm"] = "bayes"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    with pytest.raises(SpecError):
        parse_sweep(bad["spec"], "sol-search")


@pytest.mark.parametrize(
    ("objectives", "note"),
    [
        ([1.0, 1.0, 1.0], "the top 3 trials tie on valMase (1)"),
        ([1.0, 1.0, 1.2], "the top 2 trials tie on valMase (1)"),
        ([0.9, 1.0, 1.0], ""),
        ([1.0], ""),
    ],
)
def test_a_tie_at_the_top_is_said_in_the_completion_message(objectives: list[float], note: str) -> None:
    trials = [
        SweepTrial(
            index=i, name=f"demo-t{i:03d}", params={LR: 0.001 * (i + 1)}, phase="Succeeded", objective=o
        )
        for i, o in enumerate(objectives)
    ]
    said = sw.tie_note(sw.leaderboard(trials, "minimize"), "valMase")
    assert (note in said and "valLoss" in said) if note else said == ""
