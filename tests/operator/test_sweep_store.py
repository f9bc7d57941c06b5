"""Where a TrainingSweep's trials checkpoint (``trainop.sweep.Plan``, ``trainop.checkpoint_store``), table-driven:
the operator's S3 prefix, the template's URI, or -- with neither -- one claim ``<sweep>-checkpoints`` that the
operator creates for the sweep, each trial under ``pvc://<sweep>-checkpoints/<trial>``; refused where trials or
their pods would share a single-node claim at once (the sweep, or a trial whose values ask for several pods)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from trainop import builders, checkpoint_store
from trainop import sweep as sw
from trainop.runs import parse_run
from trainop.settings import Settings

from tests.operator.test_sweep import GRID, TEMPLATE, sweep_body
from trainer.api.manifest import SpecError

PREFIX = "s3://checkpoints/runs"
RWO, RWX = "ReadWriteOnce", "ReadWriteMany"
CPU = {**TEMPLATE, "training": {**TEMPLATE["training"], "batchSize": 64, "device": "cpu"}}
T = datetime(2026, 1, 2, tzinfo=timezone.utc)


def sweep(template: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    return sweep_body(template={**CPU, **(template or {})}, **spec)


# (case, template update, sweep fields, operator prefix, access mode, the claim created and trial 0's URI)
ACCEPTED = [
    ("prefix", {}, {}, PREFIX, RWO, None, None),  # the run resolves <prefix>/<ns>/<trial>
    ("template-s3", {"checkpoint": {"uri": "s3://models/sw/"}}, {}, None, RWO, None, "s3://models/sw/demo-t000"),
    ("template-claim", {"checkpoint": {"uri": "pvc://rwx/s"}}, {}, None, RWO, None, "pvc://rwx/s/demo-t000"),
    ("own-serial", {}, {"parallelism": 1}, None, RWO, "demo-checkpoints", "pvc://demo-checkpoints/demo-t000"),
    ("own-rwx", {"workers": 2}, {}, None, RWX, "demo-checkpoints", "pvc://demo-checkpoints/demo-t000"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "fields", "prefix", "mode", "claim", "uri"),
    [c[1:] for c in ACCEPTED],
    ids=[c[0] for c in ACCEPTED],
)
def test_where_a_sweeps_trials_checkpoint(
    template: dict[str, Any],
    fields: dict[str, Any],
    prefix: str | None,
    mode: str,
    claim: str | None,
    uri: str | None,
) -> None:
    plan = sw.Plan.of(sweep(template, **fields), prefix, mode)
    assert plan.claim == claim
    (first, *_) = sw.decide(plan, sweep(template, **fields), {}, T).create
    assert sw.child_run(plan, first)["spec"]["checkpoint"].get("uri") == uri


# (case, template update, sweep fields, the problems' openings)
REFUSED = [
    ("parallel-default", {}, {}, ["spec.parallelism: 2 (the default) trials at once would share"]),
    ("parallel", {}, {"parallelism": 4}, ["spec.parallelism: 4 trials at once"]),
    ("workers", {"workers": 2}, {"parallelism": 1}, ["spec.template.workers: 2 worker pods at once"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "fields", "openings"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_trials_that_would_share_a_single_node_claim_are_refused_with_the_fixes(
    template: dict[str, Any], fields: dict[str, Any], openings: list[str]
) -> None:
    with pytest.raises(SpecError) as err:
        sw.Plan.of(sweep(template, **fields), None, RWO)
    found = err.value.problems
    assert len(found) == len(openings) and all(p.startswith(o) for p, o in zip(found, openings, strict=True))
    for problem in found:
        assert "ReadWriteOnce PersistentVolumeClaim demo-checkpoints that the operator creates" in problem
        assert "set spec.template.checkpoint.uri to s3://bucket/prefix" in problem
    assert "to 1" in found[0]


def test_a_trial_whose_values_ask_for_several_pods_fails_alone() -> None:
    """``workers`` is a parameter: the template is fine, trial 1's value is not (recorded Failed, without a
    run); trials 0 and 2 run."""
    doc = sweep(parallelism=1, parameters=[GRID[0], {"path": "workers", "values": [1, 2]}])
    plan = sw.Plan.of(doc, None, RWO)
    trials = sw.decide(plan, doc, {}, T).status["trials"]
    assert [(t["params"]["workers"], t["phase"]) for t in trials] == [(1, "Pending")]
    done = {**trials[0], "phase": "Succeeded", "objective": 0.1}
    again = sweep_body(status={"trials": [done]}, **doc["spec"])
    finished = {"demo-t000": {"status": {"phase": "Succeeded", "metrics": {"valMase": 0.1}}}}
    after = sw.decide(plan, again, finished, T).status["trials"]
    assert [(t["params"]["workers"], t["phase"]) for t in after] == [
        (1, "Succeeded"),
        (2, "Failed"),
        (1, "Pending"),
    ]
    assert after[1]["message"].startswith("invalid parameters: spec.template.workers: 2 worker pods at once")


def test_a_trial_names_the_sweeps_claim_and_gets_none_of_its_own() -> None:
    doc = sweep(parallelism=1)
    plan = sw.Plan.of(doc, None, RWO)
    (first,) = sw.decide(plan, doc, {}, T).create
    child = sw.child_run(plan, first)
    run = {**child, "metadata": {**child["metadata"], "namespace": "ml", "uid": "trial-uid"}}
    settings = Settings(status_throttle_seconds=10)
    spec = builders.validate_run(run, settings)
    assert spec.checkpoint.uri == "pvc://demo-checkpoints/demo-t000"
    assert checkpoint_store.build_claim(parse_run(run), spec, settings) is None
    assert checkpoint_store.claims(spec) == [("checkpoints", "demo-checkpoints", False)]
