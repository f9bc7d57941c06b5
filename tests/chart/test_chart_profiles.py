# ruff: noqa: F811  (the helm_bin fixture is imported from test_chart and used as a parameter)
"""The chart's ``trainer.defaults`` and ``trainer.profiles``, rendered with the real helm and read back by the
operator's own settings: what values.yaml documents (its commented sample profiles included) is what the
operator accepts, and values.schema.json knows exactly the keys the operator does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from trainop import profiles
from trainop.settings import Settings, TrainerDefaults

from tests.chart.test_chart import CHART, helm_bin, one, render  # noqa: F401 (fixture)
from trainer.api.spec import TrainingRunSpec


def commented_profiles() -> dict[str, Any]:
    """The sample profiles values.yaml shows commented out under ``profiles: {}``, uncommented."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    start = lines.index("  profiles: {}") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("  #  "):
            break
        block.append(line[len("  #") :])
    found: dict[str, Any] = yaml.safe_load("\n".join(block))
    return found


def operator_env(*set_args: str) -> dict[str, str]:
    env = one(render(*set_args), "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e["value"] for e in env}


def test_the_documented_profiles_render_as_json_the_operator_accepts(
    helm_bin: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = commented_profiles()
    assert set(samples) == {"a100", "cpu"}
    values = tmp_path / "values.yaml"
    values.write_text(
        yaml.safe_dump({"trainer": {"profiles": samples, "defaults": {"nodeSelector": {"pool": "gpu"}}}})
    )
    env = operator_env("-f", str(values))
    assert json.loads(env["TRAINOP_TRAINER_PROFILES"]) == samples
    assert json.loads(env["TRAINOP_TRAINER_DEFAULTS"]) == {
        "image": "ghcr.io/crypto-price-predictor/trainer:0.1.0",
        "stallTimeout": "15m",
        "nodeSelector": {"pool": "gpu"},
    }
    assert (
        "TRAINOP_DEFAULT_IMAGE" not in env and "TRAINOP_STALL_TIMEOUT" not in env
    )  # one setting, in the JSON
    for name in ("TRAINOP_DEFAULT_IMAGE", "TRAINOP_STALL_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    for name in ("TRAINOP_TRAINER_DEFAULTS", "TRAINOP_TRAINER_PROFILES"):
        monkeypatch.setenv(name, env[name])
    settings = Settings()
    cpu, _ = profiles.apply_defaults(
        TrainingRunSpec.model_validate({"symbol": "SOL", "profile": "cpu"}), settings
    )
    assert "nvidia.com/gpu" not in cpu.resources.limits and cpu.node_selector == {} and cpu.tolerations == []
    a100, _ = profiles.apply_defaults(
        TrainingRunSpec.model_validate({"symbol": "SOL", "profile": "a100"}), settings
    )
    assert a100.resources.limits["nvidia.com/gpu"] == 1 and a100.tolerations[0].key == "nvidia.com/gpu"


def test_values_schema_knows_exactly_the_operators_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    pod = schema["definitions"]["trainerPod"]
    assert set(pod["properties"]) == {f.alias for f in TrainerDefaults.model_fields.values()}
    assert set(pod["properties"]["resources"]["properties"]) == {"requests", "limits"}
    trainer = schema["properties"]["trainer"]["properties"]
    assert trainer["profiles"]["additionalProperties"] == {"$ref": "#/definitions/trainerPod"}
