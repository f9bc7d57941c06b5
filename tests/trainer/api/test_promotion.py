"""The promotion rule (a table), spec.promotion's validation (per field) and the current.json document."""

from __future__ import annotations

import math

import pytest

from trainer.api.cluster import cluster_problems
from trainer.api.manifest import SpecError, parse_spec
from trainer.api.promotion import CurrentModel, decide, parse_current

NAN = math.nan


@pytest.mark.parametrize(
    ("value", "incumbent", "margin", "promoted", "says"),
    [
        (3.0, None, 0.0, True, "promoted: no current model; this run's pinball is 3"),
        (3.0, None, 0.5, True, "no current model"),
        (2.9, 3.0, 0.01, True, "promoted: pinball 2.9 vs the current model's 3 (needed <= 2.97: 1% below"),
        (2.97, 3.0, 0.01, True, "needed <= 2.97"),  # exactly at the margin
        (2.98, 3.0, 0.01, False, "not promoted: pinball 2.98 vs the current model's 3 (needed <= 2.97"),
        (3.0, 3.0, 0.0, True, "needed <= 3: at most the current's"),  # equal, no margin: the newer model
        (3.1, 3.0, 0.0, False, "not promoted: pinball 3.1"),
        (NAN, 3.0, 0.0, False, "not promoted: this run's pinball is not a finite number"),
        (NAN, None, 0.0, False, "not a finite number"),
        (math.inf, 3.0, 0.0, False, "not a finite number"),
        (3.0, NAN, 0.1, True, "promoted: the current model's pinball is not a finite number"),
    ],
)
def test_decide(value: float, incumbent: float | None, margin: float, promoted: bool, says: str) -> None:
    d = decide(value, incumbent, margin, "pinball")
    assert d.promoted is promoted
    assert says in d.reason


def _problems(promotion: object, **more: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec({"symbol": "SOL", "promotion": promotion, **more})
    return info.value.problems


def test_spec_defaults_and_fields() -> None:
    p = parse_spec({"symbol": "SOL", "promotion": {}}).promotion
    assert p is not None
    assert (p.metric, p.source, p.min_improvement, p.uri) == ("pinball", "validation", 0.0, None)
    p = parse_spec({"symbol": "SOL", "promotion": {"metric": "mase", "minImprovement": 0.02}}).promotion
    assert p is not None and (p.metric, p.min_improvement) == ("mase", 0.02)


@pytest.mark.parametrize(
    ("promotion", "problem"),
    [
        (
            {"source": "walkForward"},
            "spec.promotion.source: walkForward is not available: a plain run has no",
        ),
        ({"metric": "mae"}, "spec.promotion.metric: must be one of 'pinball' or 'mase'"),
        (
            {"minImprovement": -0.1},
            "spec.promotion.minImprovement: Input should be greater than or equal to 0",
        ),
        ({"minImprovement": 1.0}, "spec.promotion.minImprovement: Input should be less than 1"),
        ({"uri": "s3:/bucket"}, "spec.promotion.uri: 's3:/bucket' is not a valid S3 URI"),
        ({"minimprovement": 0.1}, "spec.promotion.minimprovement: unknown field; allowed: metric, source"),
    ],
)
def test_spec_refusals_name_the_field(promotion: dict[str, object], problem: str) -> None:
    [line] = _problems(promotion)
    assert line.startswith(problem), line


def test_a_walk_forward_run_has_no_model_to_promote() -> None:
    wf = {"start": "2025-01-01", "end": "2025-03-01"}
    [line] = _problems({}, walkForward=wf)
    assert line.startswith("spec: promotion: a walk-forward run (spec.walkForward) trains one model per fold")


@pytest.mark.parametrize(
    ("checkpoint", "pointer", "refused"),
    [
        (None, "/tmp/models", True),  # the pod's own filesystem
        (None, "s3://models/sol", False),
        ("pvc://sol-ckpt/runs/r1", "pvc://sol-ckpt/runs", False),  # the claim the Job mounts
        ("pvc://sol-ckpt/runs/r1", "pvc://other/runs", True),  # a claim no pod mounts
        ("s3://models/sol/r1", "pvc://sol-ckpt", True),
    ],
)
def test_cluster_pointer_must_be_reachable_from_the_pod(
    checkpoint: str | None, pointer: str, refused: bool
) -> None:
    spec = parse_spec({"symbol": "SOL", "checkpoint": {"uri": checkpoint}, "promotion": {"uri": pointer}})
    problems = [p for p in cluster_problems(spec) if p.startswith("spec.promotion.uri:")]
    assert bool(problems) == refused, problems
    if refused:
        assert f"{pointer!r} is not where a pod can keep current.json" in problems[0]


def test_current_document_round_trips_and_bad_ones_are_named() -> None:
    doc = CurrentModel(
        model="s3://b/p/r1/best.pt", sha256="ab" * 32, value=1.5, promoted_at="2026-01-01T00:00:00Z"
    ).document()
    assert doc["promotedAt"] == "2026-01-01T00:00:00Z" and "namespace" not in doc  # None is left out
    current = parse_current(doc, "x")
    assert current.prefix == "s3://b/p/r1" and current.value == 1.5
    assert parse_current({"model": "m.pt", "value": "high"}, "x").value is None
    with pytest.raises(ValueError, match=r"^s3://b/current.json is not a current-model pointer \(model: "):
        parse_current({"run": "r1"}, "s3://b/current.json")
