"""Where a TrainingSchedule's runs checkpoint (``trainop.schedule.Plan``, ``trainop.checkpoint_store``), table-driven:
the operator's S3 prefix, the template's URI, or -- with neither -- one claim ``<schedule>-checkpoints`` that the
operator creates for the schedule, refused where the runs or their pods would share a single-node claim at once;
and a tick's run names that claim, so the run controller mounts it and creates no claim of its own."""

from __future__ import annotations

from typing import Any

import pytest
from trainop import builders, checkpoint_store
from trainop import schedule as sc
from trainop import sweep as sw
from trainop.runs import parse_run
from trainop.settings import Settings

from tests.operator.test_builders import job_of
from tests.operator.test_schedule import PREFIX, SAMPLE, body, utc
from tests.operator.test_sweep import SAMPLE as SWEEP
from trainer.api.manifest import SpecError

RWO, RWOP, RWX = "ReadWriteOnce", "ReadWriteOncePod", "ReadWriteMany"
FOLDS = {"start": "2024-01-01", "end": "2024-12-31", "refitEvery": "90d"}
CPU = {"training": {"batchSize": 64, "device": "cpu"}}


def schedule(template: dict[str, Any] | None = None, name: str = "daily", **spec: Any) -> dict[str, Any]:
    doc = body(name=name, **spec)
    doc["spec"]["template"]["spec"].update({**CPU, **(template or {})})
    return doc


# (case, template update, schedule fields, operator prefix, access mode, expected base and claim)
ACCEPTED = [
    ("prefix", {}, {}, PREFIX, RWO, "s3://checkpoints/runs/ml/daily", None),
    ("template-s3", {"checkpoint": {"uri": "s3://models/sol/"}}, {}, None, RWO, "s3://models/sol", None),
    ("template-claim", {"checkpoint": {"uri": "pvc://models/sol"}}, {}, None, RWO, "pvc://models/sol", None),
    ("own-forbid", {}, {"concurrencyPolicy": "Forbid"}, None, RWO, "pvc://daily-checkpoints", "daily-checkpoints"),
    ("own-replace", {}, {"concurrencyPolicy": "Replace"}, None, RWOP, "pvc://daily-checkpoints", "daily-checkpoints"),
    ("own-allow-rwx", {"workers": 2}, {}, None, RWX, "pvc://daily-checkpoints", "daily-checkpoints"),
    ("own-folds-serial", {"walkForward": {**FOLDS, "parallelism": 1}}, {"concurrencyPolicy": "Forbid"}, None, RWO,
     "pvc://daily-checkpoints", "daily-checkpoints"),
    ("prefix-allow-workers", {"workers": 2}, {}, PREFIX, RWO, "s3://checkpoints/runs/ml/daily", None),
    ("user-claim-allow", {"workers": 2, "checkpoint": {"uri": "pvc://rwx/sol"}}, {}, None, RWO, "pvc://rwx/sol", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "fields", "prefix", "mode", "base", "claim"),
    [c[1:] for c in ACCEPTED],
    ids=[c[0] for c in ACCEPTED],
)
def test_where_a_schedules_runs_checkpoint(
    template: dict[str, Any],
    fields: dict[str, Any],
    prefix: str | None,
    mode: str,
    base: str,
    claim: str | None,
) -> None:
    plan = sc.Plan.of(schedule(template, **fields), prefix, mode)
    assert (plan.base, plan.claim) == (base, claim)


# (case, template update, schedule fields, access mode, the problems' openings, in order)
REFUSED = [
    ("allow-default", {}, {}, RWO, ["spec.concurrencyPolicy: Allow (the default) lets runs overlap"]),
    ("allow-rwop", {}, {"concurrencyPolicy": "Allow"}, RWOP, ["spec.concurrencyPolicy: Allow lets runs overlap"]),
    ("workers", {"workers": 2}, {"concurrencyPolicy": "Forbid"}, RWO,
     ["spec.template.spec.workers: 2 worker pods at once would share the ReadWriteOnce"]),
    ("folds-and-allow", {"walkForward": FOLDS}, {}, RWO,
     ["spec.concurrencyPolicy: Allow", "spec.template.spec.walkForward.parallelism: 4 fold pods at once"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("template", "fields", "mode", "openings"), [c[1:] for c in REFUSED], ids=[c[0] for c in REFUSED]
)
def test_runs_that_would_share_a_single_node_claim_are_refused_with_the_fixes(
    template: dict[str, Any], fields: dict[str, Any], mode: str, openings: list[str]
) -> None:
    with pytest.raises(SpecError) as err:
        sc.Plan.of(schedule(template, **fields), None, mode)
    found = err.value.problems
    assert len(found) == len(openings) and all(p.startswith(o) for p, o in zip(found, openings, strict=True))
    for problem in found:
        assert f"{mode} PersistentVolumeClaim daily-checkpoints that the operator creates" in problem
        assert "set spec.template.spec.checkpoint.uri to s3://bucket/prefix" in problem
        assert "checkpointVolume.accessMode ReadWriteMany" in problem
    assert "set spec.concurrencyPolicy to Forbid or Replace" in found[0] or "to 1" in found[0]


def test_a_long_name_gets_a_bounded_claim() -> None:
    name = "s" * 63
    plan = sc.Plan.of(schedule(name=name, concurrencyPolicy="Forbid"), None)
    assert plan.claim is not None and len(plan.claim) == 63 and plan.claim.endswith("-checkpoints")
    assert plan.base == f"pvc://{plan.claim}"


NO_S3 = Settings(status_throttle_seconds=10)


def test_a_ticks_run_names_the_schedules_claim_and_gets_none_of_its_own() -> None:
    plan = sc.Plan.of(schedule(concurrencyPolicy="Forbid", promotion={"metric": "pinball"}), None)
    child = sc.child_run(plan, utc("2026-01-02T03:00:00Z"))
    name = child["metadata"]["name"]
    assert child["spec"]["checkpoint"]["uri"] == f"pvc://daily-checkpoints/{name}"
    assert child["spec"]["promotion"]["uri"] == "pvc://daily-checkpoints"  # current.json outlives the runs
    run = {**child, "metadata": {**child["metadata"], "namespace": "ml", "uid": "run-uid"}}
    spec = builders.validate_run(run, NO_S3)
    assert spec.checkpoint.uri == f"pvc://daily-checkpoints/{name}"
    assert checkpoint_store.build_claim(parse_run(run), spec, NO_S3) is None
    pod = job_of(run, NO_S3)["spec"]["template"]["spec"]
    assert pod["volumes"] == [
        {"name": "checkpoints", "persistentVolumeClaim": {"claimName": "daily-checkpoints"}}
    ]


def test_the_samples_on_a_fresh_cluster() -> None:
    """The schedule sample (Forbid) runs on a claim without S3; the sweep sample (parallelism 4) is refused on a
    ReadWriteOnce claim with the fix, as its comment says."""
    assert sc.Plan.of(SAMPLE, None).claim == "sol-daily-checkpoints"
    with pytest.raises(SpecError) as err:
        sw.Plan.of(SWEEP, None)
    assert err.value.problems[0].startswith(
        "spec.parallelism: 4 trials at once would share the ReadWriteOnce"
    )
