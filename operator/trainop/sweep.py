"""TrainingSweep decisions (pure): the parameters of each trial, what a child TrainingRun's status means for its
trial, the leaderboard, and the sweep's status and Events.

Why pure, and why the state is ``status.trials``: the operator may be killed between any two steps (record a trial,
create its run, see the run finish). Each reconcile decides afresh from the sweep as stored and its child runs as
listed: a trial is recorded -- index, name, parameters -- in the status *before* its run is created, a recorded
trial whose run is missing (and has not finished) is created again under its deterministic name, and a new trial
is only ever the next index. So a restart never makes a duplicate (same name: the create meets a 409) nor a gap
(the record exists before the run), and never re-derives a recorded trial's parameters.

How trial ``k`` gets its parameters, always from the spec and the trials ``< k`` as the status records them:

* grid: point ``k`` of the product of the values lists (the last parameter varies fastest); no optuna.
* random: optuna's ``RandomSampler`` seeded with ``H(seed, k)``: a function of the seed and ``k`` alone.
* tpe: an optuna study rebuilt in memory from the recorded trials ``< k`` (finished: COMPLETE with the objective
  or FAIL; not finished: RUNNING, which TPE's constant liar keeps new points away from), with a
  ``TPESampler(seed=H(seed, k))``, then ``study.ask()``. Given the same records, the same parameters (any
  process, any ``PYTHONHASHSEED``); the first ``startup_trials`` are random and so depend on the seed alone. Which
  trials had *finished* when ``k`` was asked depends on timing, with parallelism > 1.

A change of what the parameters derive from (``search_hash``: parameters, algorithm, objective, seed) after the
first trial fails the sweep (``SpecChanged``) until it is reverted; the template and the limits may change.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

from trainer.api.manifest import SpecError
from trainer.api.spec import API_GROUP, API_VERSION, KIND, TrainingRunSpec
from trainer.api.status import TrainingRunStatus, rfc3339
from trainer.api.sweep import (
    LEADERBOARD_SIZE,
    LeaderboardEntry,
    Parameter,
    SweepTrial,
    TrainingSweepSpec,
    TrainingSweepStatus,
    apply_params,
    describe_params,
    grid_point,
    parse_sweep,
    search_hash,
    template_problems,
    total_trials,
)

from . import checkpoint_store
from .conditions import FAILED, RUNNING, SUCCEEDED, set_condition
from .names import bounded
from .runs import MAX_LABEL
from .status import Event

SWEEP_LABEL = f"{API_GROUP}/sweep"
TRIAL_LABEL = f"{API_GROUP}/trial"
PARAMS_ANNOTATION = f"{API_GROUP}/trial-params"
FINISHED = ("Succeeded", "Failed")

log = logging.getLogger(__name__)


def trial_name(sweep: str, index: int) -> str:
    """``<sweep>-t<NNN>``, shortened with a hash of the sweep's name when longer than a label (63)."""
    return bounded(sweep, f"-t{index:03d}", MAX_LABEL)


def trial_seed(seed: int, index: int) -> int:
    """The sampler seed of trial ``index``: a fresh sampler per trial, so trial k never depends on how many
    samples an operator process drew before."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{index}".encode()).digest()[:4], "big")


def startup_trials(total: int) -> int:
    """TPE's random start: optuna's 10, but at most a quarter of a small sweep (at least 2)."""
    return min(10, max(2, total // 4))


@dataclass(frozen=True)
class Plan:
    """A valid sweep: its spec, raw template (the values are put into it), how many trials it runs, and the claim
    the operator creates for its trials (None: on S3 or a claim the template names) of ``access_mode``."""

    name: str
    spec: TrainingSweepSpec
    template: dict[str, Any]
    total: int
    search: str
    claim: str | None = None
    access_mode: str = "ReadWriteOnce"

    @classmethod
    def of(
        cls, body: Mapping[str, Any], checkpoint_prefix: str | None = None, access_mode: str = "ReadWriteOnce"
    ) -> Plan:
        """Parse and validate a sweep; raises SpecError naming every problem. Without ``checkpoint_prefix``
        (the operator's TRAINOP_CHECKPOINT_PREFIX) and a template checkpoint URI, the trials share the sweep's
        own claim (``checkpoint_store.shared_base``), refused where trials at once would share it across nodes."""
        name = str((body.get("metadata") or {}).get("name") or "")
        spec, template = parse_sweep(body.get("spec"), name)
        problems = []
        claim = checkpoint_store.claim_of(
            checkpoint_store.shared_base(name, spec.template.checkpoint.uri, checkpoint_prefix)
        )
        if claim is not None:
            overlap = (
                checkpoint_store.overlap(
                    body.get("spec"),
                    "parallelism",
                    f"{spec.parallelism}{{default}} trials at once",
                    "1 (one trial after another)",
                )
                if spec.parallelism > 1
                else None
            )
            problems += checkpoint_store.shared_problems(
                claim, access_mode, "spec.template", spec.template, overlap
            )
        if spec.algorithm != "grid" and optuna_module() is None:
            problems.append(
                f"spec.algorithm: {spec.algorithm} needs optuna in the operator (pip install "
                "'crypto-price-predictor[sweep]'); grid does not"
            )
        if problems:
            raise SpecError(f"TrainingSweep {name}", problems)
        return cls(name, spec, template, total_trials(spec), search_hash(spec), claim, access_mode)

    def trial_problems(self, doc: Mapping[str, Any]) -> list[str]:
        """Why a trial's spec (the template with its values) is not a TrainingRun spec that can run in a cluster,
        on the sweep's claim if it has one: a value may ask for several pods at once (``workers``)."""
        problems = template_problems(doc)
        if problems or self.claim is None:
            return problems
        spec = TrainingRunSpec.model_validate(dict(doc))
        return checkpoint_store.shared_problems(self.claim, self.access_mode, "spec.template", spec)


# --- the parameters of trial k ---------------------------------------------------------------------------------


def optuna_module() -> ModuleType | None:
    try:
        import optuna
    except ImportError:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # not "A new study created in memory" per trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def _distribution(optuna: ModuleType, param: Parameter) -> Any:
    dist = optuna.distributions
    if param.values is not None:  # choices by index: any JSON value (a list of quantiles) can be one
        return dist.CategoricalDistribution(tuple(range(len(param.values))))
    low, high = param.bounds()
    if param.type == "int":
        return dist.IntDistribution(int(low), int(high), log=param.log, step=int(param.step or 1))
    return dist.FloatDistribution(float(low), float(high), log=param.log, step=param.step)


def _to_optuna(param: Parameter, value: Any) -> Any:
    """A recorded value as the sampler knows it; ValueError when it is not one of the parameter's."""
    if param.values is None:
        return value
    for i, choice in enumerate(param.values):
        if choice == value and isinstance(choice, bool) == isinstance(value, bool):
            return i
    raise ValueError(f"{value!r} is not one of {param.path}'s values")


def _from_optuna(param: Parameter, value: Any) -> Any:
    if param.values is not None:
        return copy.deepcopy(param.values[int(value)])
    if param.type == "int":
        return int(value)
    if param.step is not None:
        return float(value)
    low, high = param.bounds()
    return min(max(float(f"{float(value):.6g}"), low), high)  # 6 significant digits, still in range


def _sample(plan: Plan, index: int, trials: Sequence[SweepTrial]) -> dict[str, Any]:
    optuna = optuna_module()
    if optuna is None:  # Plan.of refuses such a sweep
        raise RuntimeError("optuna is not installed")
    spec = plan.spec
    dists = {p.path: _distribution(optuna, p) for p in spec.parameters}
    seed = trial_seed(spec.seed, index)
    if spec.algorithm == "random":
        sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        sampler = optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup_trials(plan.total), constant_liar=True
        )
    direction = "minimize" if spec.objective.direction == "minimize" else "maximize"
    study = optuna.create_study(direction=direction, sampler=sampler)
    if spec.algorithm == "tpe":
        state = optuna.trial.TrialState
        for t in sorted(trials, key=lambda t: t.index):
            if t.index >= index:
                continue
            try:
                params = {p.path: _to_optuna(p, t.params[p.path]) for p in spec.parameters}
                if t.phase == "Succeeded" and t.objective is not None:
                    frozen = optuna.trial.create_trial(
                        params=params, distributions=dists, value=t.objective, state=state.COMPLETE
                    )
                else:
                    done = state.FAIL if t.phase in FINISHED else state.RUNNING
                    frozen = optuna.trial.create_trial(params=params, distributions=dists, state=done)
                study.add_trial(frozen)
            except (KeyError, ValueError) as exc:  # a record that no longer fits: left out, deterministically
                log.info("sweep %s: trial %s left out of the TPE history: %s", plan.name, t.index, exc)
    asked = study.ask(dists)
    return {p.path: _from_optuna(p, asked.params[p.path]) for p in spec.parameters}


def suggest(plan: Plan, index: int, trials: Sequence[SweepTrial]) -> dict[str, Any]:
    """The parameters of trial ``index``: a pure function of the spec and the recorded trials before it."""
    if plan.spec.algorithm == "grid":
        return grid_point(plan.spec, index)
    return _sample(plan, index, trials)


# --- children --------------------------------------------------------------------------------------------------


def child_spec(plan: Plan, name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The template with the trial's values; a checkpoint URI of the template, or the sweep's claim, gets
    ``/<trial>`` so that trials never resume from each other's checkpoints (empty: the operator's
    prefix/<ns>/<trial>)."""
    spec = apply_params(plan.template, params)
    uri = (plan.template.get("checkpoint") or {}).get("uri") or (plan.claim and f"pvc://{plan.claim}")
    if uri:
        spec.setdefault("checkpoint", {})["uri"] = f"{str(uri).rstrip('/')}/{name}"
    return spec


def child_run(plan: Plan, trial: SweepTrial) -> dict[str, Any]:
    """The TrainingRun of a trial (the handler adopts it: owner reference, namespace, the sweep's labels)."""
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {
            "name": trial.name,
            "labels": {SWEEP_LABEL: plan.name, TRIAL_LABEL: str(trial.index)},
            "annotations": {PARAMS_ANNOTATION: json.dumps(trial.params, sort_keys=True)},
        },
        "spec": child_spec(plan, trial.name, trial.params),
    }


def observe(trial: SweepTrial, child: Mapping[str, Any] | None, metric: str) -> SweepTrial:
    """The trial as its run reports it; without a run, as recorded (a finished trial stays finished)."""
    if child is None:
        return trial
    status = TrainingRunStatus.parse(child.get("status"))
    phase = status.phase or "Pending"
    objective, message = None, None
    if phase == "Succeeded":
        objective = (status.metrics.dump() if status.metrics else {}).get(metric)
        if objective is None:
            message = f"the run succeeded without status.metrics.{metric}"
    elif phase == "Failed":
        message = ": ".join(t for t in (status.reason, status.message) if t)[:1024] or "the run failed"
    best = status.checkpoint.best if status.checkpoint else None
    return SweepTrial(
        index=trial.index,
        name=trial.name,
        params=trial.params,
        phase=phase,
        objective=objective,
        checkpoint=best or trial.checkpoint,
        message=message,
    )


# --- the decision ----------------------------------------------------------------------------------------------


@dataclass
class SweepDecision:
    """``status``: the merge patch (empty: nothing changed), written *before* ``create`` (the trials whose runs
    are missing, in index order) is acted on; ``events`` after."""

    status: dict[str, Any] = field(default_factory=dict)
    create: list[SweepTrial] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    phase: str = "Pending"


def tie_note(board: Sequence[Any], metric: str) -> str:
    """Said when the best trials tie on the objective: the ranking is then only the tie-break (the index). It
    happens with valMase whenever no trial's learned median beats persistence (all ship persistence, MASE 1.0)."""
    if len(board) < 2 or board[0].objective != board[1].objective:
        return ""
    tied = sum(1 for b in board if b.objective == board[0].objective)
    return (
        f"; note: the top {tied} trials tie on {metric} ({board[0].objective:g}), so the best is only the first "
        "by index; rank by an objective the trials change (valLoss: the network's own validation pinball)"
    )


def leaderboard(
    trials: Sequence[SweepTrial], direction: str, size: int = LEADERBOARD_SIZE
) -> list[LeaderboardEntry]:
    """The best ``size`` succeeded trials with an objective; ties by index (the earlier first)."""
    sign = 1.0 if direction == "minimize" else -1.0
    scored = [t for t in trials if t.phase == "Succeeded" and t.objective is not None]
    ranked = sorted(scored, key=lambda t: (sign * float(t.objective or 0.0), t.index))[:size]
    return [
        LeaderboardEntry(
            rank=i + 1,
            index=t.index,
            name=t.name,
            params=t.params,
            objective=t.objective,
            checkpoint=t.checkpoint,
        )
        for i, t in enumerate(ranked)
    ]


def _extend(plan: Plan, trials: list[SweepTrial]) -> list[SweepTrial]:
    """New trials, each recorded with the ones before it, while fewer than parallelism are unfinished. A sampled
    trial whose spec is invalid (values valid alone may clash) is recorded as Failed, without a run."""
    active = sum(1 for t in trials if t.phase not in FINISHED)
    while active < plan.spec.parallelism:
        index = trials[-1].index + 1 if trials else 0
        if index >= plan.total:
            break
        name = trial_name(plan.name, index)
        params = suggest(plan, index, trials)
        problems = plan.trial_problems(child_spec(plan, name, params))
        if problems:
            message = f"invalid parameters: {'; '.join(problems)}"[:1024]
            trials.append(SweepTrial(index=index, name=name, params=params, phase="Failed", message=message))
            continue
        trials.append(SweepTrial(index=index, name=name, params=params, phase="Pending"))
        active += 1
    return trials


def decide(
    plan: Plan, sweep: Mapping[str, Any], children: Mapping[str, Mapping[str, Any]], now: datetime
) -> SweepDecision:
    """The next step of a valid sweep from its stored status and its child runs (by name)."""
    status = TrainingSweepStatus.parse(sweep.get("status"))
    metric = plan.spec.objective.metric
    trials = [
        observe(t, children.get(t.name), metric) for t in sorted(status.trials or [], key=lambda t: t.index)
    ]
    if trials and status.search_hash and status.search_hash != plan.search:
        message = (
            "spec.parameters, algorithm, objective or seed changed after the first trial; the recorded trials were "
            "derived from the old values: revert the change, or delete and re-create the TrainingSweep"
        )
        return _compose(plan, sweep, status, trials, now, failure=("SpecChanged", message))
    trials = _extend(plan, trials)
    decision = _compose(plan, sweep, status, trials, now)
    decision.create = [t for t in trials if t.phase not in FINISHED and t.name not in children]
    return decision


def invalid(sweep: Mapping[str, Any], err: SpecError, now: datetime) -> SweepDecision:
    """Failed/InvalidSpec (one Warning Event, its message starting with the field); the trials are kept."""
    status = TrainingSweepStatus.parse(sweep.get("status"))
    message = "; ".join(err.problems)
    return _finish(sweep, status, {}, now, ("Failed", "InvalidSpec", message))


def _compose(
    plan: Plan,
    sweep: Mapping[str, Any],
    status: TrainingSweepStatus,
    trials: list[SweepTrial],
    now: datetime,
    failure: tuple[str, str] | None = None,
) -> SweepDecision:
    direction, metric = plan.spec.objective.direction, plan.spec.objective.metric
    board = leaderboard(trials, direction)
    done = sum(1 for t in trials if t.phase in FINISHED)
    total = max(plan.total, len(trials))
    best = board[0] if board else None
    if failure is not None:
        outcome = ("Failed", *failure)
    elif trials and done == len(trials) == total:
        if best is not None:
            what = f"best {best.name}: {metric} {best.objective:g} ({describe_params(best.params)})"
            where = f"; checkpoint {best.checkpoint}" if best.checkpoint else ""
            outcome = (
                "Succeeded",
                "Completed",
                f"{done} trials done; {what}{where}{tie_note(board, metric)}",
            )
        else:
            outcome = (
                "Failed",
                "AllTrialsFailed",
                f"every trial failed or reported no status.metrics.{metric}",
            )
    elif trials:
        outcome = ("Running", "TrialsRunning", f"{len(trials) - done} running, {done}/{total} done")
    else:
        outcome = ("Pending", "NoTrials", "creating the first trials")
    fields: dict[str, Any] = {
        "searchHash": status.search_hash or (plan.search if trials else None),
        "trials": [_clean(t) for t in trials] or None,
        "leaderboard": [_clean(e) for e in board] or None,
        "best": _clean(best, drop={"rank"}) if best else None,
        "trialsDone": done,
        "trialsTotal": total,
        "trialsDisplay": f"{done}/{total}",
        "running": len(trials) - done,
        "startTime": status.start_time or (rfc3339(now) if trials else None),
    }
    finished = outcome[1] in ("Completed", "AllTrialsFailed")
    fields["completionTime"] = (status.completion_time or rfc3339(now)) if finished else None
    return _finish(sweep, status, fields, now, outcome)


def _clean(model: Any, drop: set[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    return {k: v for k, v in out.items() if k not in (drop or set())}


def _finish(
    sweep: Mapping[str, Any],
    status: TrainingSweepStatus,
    fields: dict[str, Any],
    now: datetime,
    outcome: tuple[str, str, str],
) -> SweepDecision:
    """The status patch of ``outcome`` (phase, reason, message) and ``fields``, and the Event of a transition."""
    phase, reason, message = outcome
    generation = (sweep.get("metadata") or {}).get("generation")
    conditions: list[dict[str, Any]] = [c.dump() for c in status.conditions or ()]
    for type_, wanted in ((RUNNING, "Running"), (SUCCEEDED, "Succeeded"), (FAILED, "Failed")):
        state = "True" if phase == wanted else "False"
        conditions = set_condition(conditions, type_, state, reason, message, now, generation)
    wanted_status = {
        "phase": phase,
        "reason": reason,
        "message": message,
        "conditions": conditions,
        **fields,
        **({"observedGeneration": generation} if generation is not None else {}),
    }
    current = status.dump()
    patch = {
        k: v for k, v in wanted_status.items() if current.get(k) != v and not (v is None and k not in current)
    }
    events = []
    if phase == "Succeeded" and status.phase != "Succeeded":
        events.append(Event("Normal", "Succeeded", message))
    elif phase == "Failed" and (status.phase != "Failed" or status.reason != reason):
        events.append(Event("Warning", reason, message))
    return SweepDecision(status=patch, events=events, phase=phase)


def trial_created(trial: SweepTrial, names: Sequence[str]) -> Event:
    return Event(
        "Normal",
        "TrialCreated",
        f"trial {trial.index} ({trial.name}): {describe_params(trial.params, names)}",
    )
