"""Cluster-wide trainer defaults and profiles (``trainop.profiles``): the precedence table, ``status.resolved``,
and what the Job gets (golden ``job-profile.yaml``)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from trainop import builders, profiles
from trainop.runs import parse_run
from trainop.settings import DEFAULT_IMAGE, Settings
from trainop.status import resolved_change

from tests.operator.test_builders import SETTINGS, check_golden, run_of, without_manifest
from trainer.api.manifest import SpecError
from trainer.api.spec import TrainingRunSpec

GPU = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
DEFAULTS = {
    "image": "registry.example/trainer:2.0",
    "nodeSelector": {"node-pool": "gpu"},
    "tolerations": [GPU],
    "stallTimeout": "30m",
}
PROFILES: dict[str, Any] = {
    "a100": {
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"},
        "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}, "requests": {"cpu": "8"}},
        "priorityClassName": "training-high",
    },
    "cpu": {
        "resources": {"limits": {"cpu": "4", "memory": "8Gi"}},
        "nodeSelector": {},
        "tolerations": [],
        "stallTimeout": "1h",
    },
    "requests-only": {"resources": {"requests": {"cpu": "2"}}},
    "nulls": {"image": None, "serviceAccountName": "team-trainer"},
}
BUILT_IN_GPU = {"requests": {}, "limits": {"nvidia.com/gpu": 1}}
A100_RESOURCES = {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}}
CPU_RESOURCES = {"requests": {}, "limits": {"cpu": "4", "memory": "8Gi"}}


def settings(defaults: dict[str, Any] | None = None, **flat: Any) -> Settings:
    return Settings(trainer_defaults=defaults or {}, trainer_profiles=PROFILES, **flat)


def resolve(spec: dict[str, Any], s: Settings) -> tuple[dict[str, Any], dict[str, str]]:
    resolved, sources = profiles.apply_defaults(TrainingRunSpec.model_validate({"symbol": "SOL", **spec}), s)
    return resolved.model_dump(by_alias=True, mode="json", exclude_none=True), dict(sources)


# (id, spec, settings, expected values (camelCase, a subset), expected sources (a subset))
ROWS: list[tuple[str, dict[str, Any], Settings, dict[str, Any], dict[str, str]]] = [
    (
        "nothing-set-built-in",
        {},
        settings(),
        {"image": DEFAULT_IMAGE, "resources": BUILT_IN_GPU, "nodeSelector": {}, "tolerations": []},
        {"image": "built-in", "resources": "built-in", "stallTimeout": "built-in", "tolerations": "built-in"},
    ),
    (
        "defaults-where-the-spec-is-silent",
        {},
        settings(DEFAULTS),
        {
            "image": "registry.example/trainer:2.0",
            "nodeSelector": {"node-pool": "gpu"},
            "stallTimeout": "30m",
        },
        {"image": "defaults", "nodeSelector": "defaults", "tolerations": "defaults", "resources": "built-in"},
    ),
    (
        "profile-over-defaults-per-field",
        {"profile": "a100"},
        settings(DEFAULTS),
        {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}, "tolerations": [GPU]},
        {"nodeSelector": "profile", "resources": "profile", "tolerations": "defaults", "image": "defaults"},
    ),
    (
        "spec-over-profile",
        {"profile": "a100", "image": "registry.example/mine:1", "nodeSelector": {"pool": "mine"}},
        settings(DEFAULTS),
        {"image": "registry.example/mine:1", "nodeSelector": {"pool": "mine"}, "resources": A100_RESOURCES},
        {"image": "spec", "nodeSelector": "spec", "resources": "profile", "priorityClassName": "profile"},
    ),
    (
        "cpu-profile-replaces-the-built-in-gpu-limit",
        {"profile": "cpu"},
        settings(),
        {"resources": CPU_RESOURCES, "stallTimeout": "1h"},
        {"resources": "profile", "stallTimeout": "profile"},
    ),
    (
        "cpu-profile-clears-the-defaults-gpu-pool-with-empty-values",
        {"profile": "cpu"},
        settings(DEFAULTS),
        {"nodeSelector": {}, "tolerations": [], "image": "registry.example/trainer:2.0"},
        {"nodeSelector": "profile", "tolerations": "profile", "image": "defaults"},
    ),
    (
        "empty-spec-values-are-silent-resources-as-the-crd-defaults-them",
        {"profile": "cpu", "resources": {}, "nodeSelector": {}, "tolerations": [], "priorityClassName": ""},
        settings(DEFAULTS),
        {"resources": CPU_RESOURCES, "nodeSelector": {}, "priorityClassName": None},
        {"resources": "profile", "nodeSelector": "profile", "priorityClassName": "built-in"},
    ),
    (
        "spec-resources-replace-the-profiles-whole-no-merge",
        {"profile": "a100", "resources": {"limits": {"nvidia.com/gpu": 2}}},
        settings(),
        {"resources": {"requests": {}, "limits": {"nvidia.com/gpu": 2}}},
        {"resources": "spec"},
    ),
    (
        "spec-limits-without-gpu-give-a-gpu-less-pod",
        {"resources": {"limits": {}}},
        settings(),
        {"resources": {"requests": {}, "limits": {}}},
        {"resources": "spec"},
    ),
    (
        "node-selector-replaced-not-merged",
        {"profile": "a100"},
        settings({"nodeSelector": {"node-pool": "gpu", "zone": "a"}}),
        {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-A100-SXM4-80GB"}},
        {"nodeSelector": "profile"},
    ),
    (
        "profile-resources-without-limits-get-the-models-one-gpu",
        {"profile": "requests-only"},
        settings(),
        {"resources": {"requests": {"cpu": "2"}, "limits": {"nvidia.com/gpu": 1}}},
        {"resources": "profile"},
    ),
    (
        "a-null-in-a-profile-is-absent",
        {"profile": "nulls"},
        settings(DEFAULTS),
        {"image": "registry.example/trainer:2.0", "serviceAccountName": "team-trainer"},
        {"image": "defaults", "serviceAccountName": "profile"},
    ),
    (
        "spec-stall-timeout-over-profile",
        {"profile": "cpu", "stallTimeout": "5m"},
        settings(DEFAULTS),
        {"stallTimeout": "5m"},
        {"stallTimeout": "spec"},
    ),
    (
        "the-flat-TRAINOP_DEFAULT_IMAGE-and-STALL_TIMEOUT-are-the-defaults-layer",
        {},
        settings(default_image="registry.example/legacy:1", stall_timeout="45m"),
        {"image": "registry.example/legacy:1", "stallTimeout": "45m"},
        {"image": "defaults", "stallTimeout": "defaults"},
    ),
    (
        "checkpoint-uri-of-the-spec",
        {"checkpoint": {"uri": "s3://team/sol"}},
        settings(),
        {},
        {"checkpointUri": "spec"},
    ),
    ("checkpoint-uri-left-to-the-operator", {}, settings(), {}, {"checkpointUri": "defaults"}),
]


@pytest.mark.parametrize(("spec", "s", "values", "sources"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_precedence(
    spec: dict[str, Any], s: Settings, values: dict[str, Any], sources: dict[str, str]
) -> None:
    got, got_sources = resolve(spec, s)
    assert {k: got.get(k) for k in values} == values
    assert {k: got_sources[k] for k in sources} == sources
    assert set(got_sources) == {*profiles.FIELDS.values(), "checkpointUri"}


def test_every_field_has_a_source_and_the_rest_of_the_spec_is_kept() -> None:
    spec = TrainingRunSpec.model_validate({"symbol": "SOL", "profile": "cpu", "training": {"epochs": 3}})
    resolved, _ = profiles.apply_defaults(spec, settings(DEFAULTS))
    untouched = {"symbol", "training", "model", "data", "checkpoint", "profile", "workers"}
    assert resolved.model_dump(include=untouched) == spec.model_dump(include=untouched)
    assert resolved.training.device == "auto"  # a profile sets pod fields only; auto trains on the CPU


@pytest.mark.parametrize(
    ("profiles_setting", "known"),
    [(PROFILES, "known: a100, cpu, nulls, requests-only"), ({}, "known: none (the chart's trainer.profiles")],
)
def test_unknown_profile_names_the_field_and_the_known_profiles(
    profiles_setting: dict[str, Any], known: str
) -> None:
    s = Settings(trainer_profiles=profiles_setting, checkpoint_prefix="s3://checkpoints/runs")
    with pytest.raises(SpecError) as err:
        builders.validate_run(run_of({"profile": "a10"}), s)  # the operator's resolve: Failed/InvalidSpec
    (problem,) = err.value.problems
    assert problem.startswith("spec.profile: unknown profile 'a10'; ") and known in problem


def test_settings_objects_are_never_shared_with_a_spec() -> None:
    s = settings(DEFAULTS)
    resolved, _ = profiles.apply_defaults(TrainingRunSpec.model_validate({"symbol": "SOL"}), s)
    resolved.node_selector["node-pool"] = "changed"
    resolved.tolerations[0].key = "changed"
    assert s.trainer_defaults.node_selector == {"node-pool": "gpu"}
    assert s.trainer_defaults.tolerations and s.trainer_defaults.tolerations[0].key == "nvidia.com/gpu"


def test_a_profiles_gpus_set_the_processes_per_pod() -> None:
    """The profile is applied before the cluster rules and the command: 4 GPUs -> torchrun, 4 processes."""
    s = Settings(
        checkpoint_prefix="s3://checkpoints/runs",
        trainer_profiles={"x4": {"resources": {"limits": {"nvidia.com/gpu": 4}}}},
    )
    body = run_of({"profile": "x4"})
    del body["spec"]["resources"]
    command = builders.command(parse_run(body), builders.validate_run(body, s), s)
    assert command[:6] == [*builders.LAUNCH, "--standalone", "--nproc-per-node", "4"]


# --- status.resolved and the Job ------------------------------------------------------------------------------


def profiled_run(profile: str = "cpu") -> dict[str, Any]:
    """The sample with its pod fields left to the cluster: a profile over GPU defaults."""
    body = run_of({"profile": profile})
    for key in ("resources", "tolerations", "stallTimeout"):
        del body["spec"][key]
    return body


PROFILED = Settings(
    checkpoint_prefix="s3://checkpoints/runs",
    s3_endpoint="http://minio.minio:9000",
    s3_secret_name="s3-credentials",
    trainer_defaults=DEFAULTS,
    trainer_profiles=PROFILES,
)


def test_job_golden_profiled_run() -> None:
    """a100 over the defaults: its nodeSelector, resources and priority class; the defaults' image and GPU
    toleration; the annotation naming the profile."""
    body = profiled_run("a100")
    job = builders.build_job(parse_run(body), builders.validate_run(body, PROFILED), PROFILED)
    assert job["metadata"]["annotations"] == {builders.PROFILE_ANNOTATION: "a100"}
    check_golden("job-profile.yaml", without_manifest(job))


def test_status_resolved_of_a_profiled_run() -> None:
    body = profiled_run()
    run = parse_run(body)
    resolved = profiles.describe(run, builders.validate_run(body, PROFILED), PROFILED)
    assert resolved.dump() == {
        "profile": "cpu",
        "image": "registry.example/trainer:2.0",
        "resources": {"limits": {"cpu": "4", "memory": "8Gi"}},
        "nodeSelector": {},
        "tolerations": [],
        "priorityClassName": None,
        "serviceAccountName": "sol-tft-trainer",
        "stallTimeout": "1h",
        "checkpointUri": "s3://checkpoints/runs/ml/sol-tft",
        "checkpointStore": "s3",
        "sources": {
            "image": "defaults",
            "resources": "profile",
            "nodeSelector": "profile",
            "tolerations": "profile",
            "priorityClassName": "built-in",
            "serviceAccountName": "built-in",
            "stallTimeout": "profile",
            "checkpointUri": "defaults",
        },
    }


def test_checkpoint_store_by_scheme() -> None:
    run = parse_run(run_of())
    spec = builders.validate_run(run_of(), SETTINGS)
    assert profiles.describe(run, spec, SETTINGS).checkpoint_store == "s3"
    on_claim = spec.model_copy(deep=True)
    on_claim.checkpoint.uri = "pvc://sol-tft-checkpoints/runs"  # the pvc helper's store; classified by prefix
    assert profiles.describe(run, on_claim, SETTINGS).checkpoint_store == "pvc"


def test_resolved_change_replaces_maps_and_writes_only_a_difference() -> None:
    body = profiled_run()
    resolved = profiles.describe(parse_run(body), builders.validate_run(body, PROFILED), PROFILED)
    stored = {"nodeSelector": {"node-pool": "gpu"}, "priorityClassName": "old", "sources": {"image": "spec"}}
    patch = resolved_change({"status": {"resolved": stored}}, resolved).status["resolved"]
    assert patch["nodeSelector"] == {"node-pool": None}  # a merge patch would keep the old key
    assert patch["priorityClassName"] is None and patch["sources"]["image"] == "defaults"
    current = copy.deepcopy({k: v for k, v in resolved.dump().items() if v is not None})
    assert resolved_change({"status": {"resolved": current}}, resolved).status == {}
