"""The spec model: samples validate, and every kind of mistake names the field and what is allowed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from trainer.api.manifest import SpecError, load_manifest, parse_spec
from trainer.api.spec import TrainingRunSpec

ROOT = Path(__file__).resolve().parents[3]
SAMPLES = sorted((ROOT / "manifests" / "samples").glob("*run*.yaml"))


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_samples_validate(path: Path) -> None:
    name, spec = load_manifest(path)
    assert name
    assert spec.symbol == spec.all_symbols[0]


def test_sol_sample_spells_out_the_defaults() -> None:
    """sol-run.yaml writes every training default explicitly, and they equal the model's defaults."""
    doc = yaml.safe_load((ROOT / "manifests/samples/sol-run.yaml").read_text())
    assert doc["metadata"]["name"] == "sol-tft" and doc["spec"]["symbol"] == "SOL"
    defaults = TrainingRunSpec(symbol="SOL").model_dump(by_alias=True)
    for section in ("data", "model", "training", "checkpoint"):
        assert set(doc["spec"][section]) == set(defaults[section]), section
        assert doc["spec"][section] == defaults[section], section


def problems(spec: dict[str, object]) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    return info.value.problems


def test_unknown_field_names_field_and_allowed() -> None:
    [p] = problems({"symbol": "SOL", "training": {"learningrate": 0.1}})
    assert p.startswith("spec.training.learningrate: unknown field")
    assert "learningRate" in p and "batchSize" in p


def test_enum_names_allowed_values() -> None:
    [p] = problems({"symbol": "SOL", "training": {"device": "tpu"}})
    assert p.startswith("spec.training.device:")
    assert "'auto'" in p and "'cpu'" in p and "'cuda'" in p


def test_bounds_and_patterns() -> None:
    ps = problems({"symbol": "sol", "training": {"epochs": 0}, "data": {"horizon": 100}})
    joined = "\n".join(ps)
    assert "spec.symbol: String should match pattern" in joined and "'sol'" in joined
    assert "spec.training.epochs: Input should be greater than or equal to 1 (got 0)" in joined
    assert "spec.data.horizon: Input should be less than or equal to 60 (got 100)" in joined


def test_cross_field_rules() -> None:
    assert "divisible" in problems({"symbol": "SOL", "model": {"hiddenSize": 30, "attentionHeads": 4}})[0]
    assert "symbols[0] must be" in problems({"symbol": "SOL", "symbols": ["BTC", "SOL"]})[0]
    assert "0.5" in problems({"symbol": "SOL", "model": {"quantiles": [0.1, 0.2, 0.9]}})[0]
    assert "s3://bucket/prefix" in problems({"symbol": "SOL", "checkpoint": {"uri": "s3:/nope"}})[0]


def test_architecture_excludes_training_knobs() -> None:
    a = parse_spec({"symbol": "SOL", "training": {"epochs": 5}}).architecture()
    b = parse_spec({"symbol": "SOL", "training": {"epochs": 500, "learningRate": 0.01}}).architecture()
    c = parse_spec({"symbol": "SOL", "model": {"hiddenSize": 64}}).architecture()
    assert a == b and a != c


def test_manifest_shape_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {symbol: SOL}\n")
    with pytest.raises(SpecError) as info:
        load_manifest(bad)
    text = str(info.value)
    assert "apiVersion: must be cryptopredictor.dev/v1alpha1" in text
    assert "kind: must be TrainingRun" in text
    assert "metadata.name: must be a DNS label" in text


def test_cli_bad_spec_exits_2_without_traceback(tmp_path: Path) -> None:
    doc = yaml.safe_load((ROOT / "manifests/samples/sol-run.yaml").read_text())
    doc["spec"]["training"]["optimizer"] = "sgd"
    doc["spec"]["model"]["dropout"] = 1.5
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "run", str(path), "--output", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "spec.training.optimizer: unknown field; allowed:" in proc.stderr
    assert "spec.model.dropout: Input should be less than 0.9 (got 1.5)" in proc.stderr
    assert not (tmp_path / "out").exists()  # failed before any training or output


def test_train_subcommand_has_the_sample_defaults() -> None:
    """`python -m trainer train --symbol SOL` trains what `run manifests/samples/sol-run.yaml` trains."""
    from trainer.cli import _resolve_spec, build_parser

    _, via_train = _resolve_spec(build_parser().parse_args(["train", "--symbol", "SOL"]))
    name, via_run = _resolve_spec(
        build_parser().parse_args(["run", str(ROOT / "manifests/samples/sol-run.yaml")])
    )
    keys = ("symbol", "symbols", "data", "model", "training", "checkpoint")
    assert via_train.model_dump(include=set(keys)) == via_run.model_dump(include=set(keys))
    assert name == "sol-tft"
    _, own_data = _resolve_spec(build_parser().parse_args(["train", "--symbol", "SOL", "--data", "x.csv"]))
    assert own_data.all_symbols == ["SOL"]


def test_spec_error_is_a_config_error_exit_2() -> None:
    from trainer.api.errors import ConfigError

    err = SpecError("x", ["spec.symbol: bad"])
    assert isinstance(err, ConfigError) and isinstance(err, ValueError) and err.exit_code == 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (
            b"\x89PNG\r\n\x1a\n\x00\x00",
            "not a text file (byte 0x89 at offset 0 is not UTF-8); a manifest is YAML or JSON",
        ),
        (None, "is a directory; give the manifest file (YAML or JSON)"),
    ],
    ids=["binary", "directory"],
)
def test_unreadable_manifest_names_the_file(tmp_path: Path, content: bytes | None, problem: str) -> None:
    path = tmp_path / "run.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(SpecError) as info:
        load_manifest(path)
    assert info.value.source == str(path) and info.value.problems == [problem]


@pytest.mark.parametrize(
    ("update", "field", "phrase"),
    [
        ({"image": "my image"}, "spec.image", "no spaces"),
        ({"image": "Registry.Example/Trainer"}, "spec.image", "lower case"),
        ({"queueName": "Gpu_Queue"}, "spec.queueName", "kueue.x-k8s.io/queue-name"),
        ({"nodeSelector": {"-bad": "x"}}, "spec.nodeSelector", "not a label key"),
        ({"nodeSelector": {"ok": "-bad"}}, "spec.nodeSelector", "not a label value"),
        ({"stallTimeout": "forever"}, "spec.stallTimeout", "a duration such as 90s, 15m or 1h30m"),
        ({"checkpoint": {"s3Endpoint": "minio:9000"}}, "spec.checkpoint.s3Endpoint", "a URL such as"),
        ({"checkpoint": {"uri": "pvc://My_Claim/x"}}, "spec.checkpoint.uri", "lower-case DNS label"),
        ({"checkpoint": {"uri": "pvc://c/../x"}}, "spec.checkpoint.uri", "must stay inside the claim"),
    ],
)
def test_cluster_fields_name_the_field_and_what_is_allowed(
    update: dict[str, object], field: str, phrase: str
) -> None:
    [p] = problems({"symbol": "SOL", **update})
    assert p.startswith(f"{field}:") and phrase in p, p
    assert "Value error," not in p


@pytest.mark.parametrize(
    ("uri", "accepted"),
    [
        ("/data/ckpt", False),
        ("file:///etc", False),
        ("runs/x", False),
        ("/var/lib/trainer/pvc/c/x", False),  # the mount path itself: name the claim instead
        ("s3://b-1/x", True),
        ("pvc://sol-tft-checkpoints/sol-tft", True),
        ("pvc://shared", True),
        (None, True),  # the operator fills in its prefix or the run's own claim
    ],
)
def test_checkpoint_uri_in_a_cluster_must_outlive_the_pod(uri: str | None, accepted: bool) -> None:
    from trainer.api.cluster import cluster_problems

    found = cluster_problems(parse_spec({"symbol": "SOL", "checkpoint": {"uri": uri}}))
    if accepted:
        assert found == []
        return
    [p] = found
    assert p.startswith("spec.checkpoint.uri:") and repr(uri) in p
    assert "s3://bucket/prefix" in p and "pvc://CLAIM/path" in p


def test_the_crd_pattern_of_checkpoint_uri_matches_the_cluster_rule() -> None:
    """The CRD's pattern (Go) refuses at admission what cluster_problems would refuse later."""
    import re

    from trainer.api.patterns import CLUSTER_CHECKPOINT_PATTERN

    for uri in ("s3://b-1/x", "pvc://c", "pvc://c/x/y", "pvc://0-c/"):
        assert re.match(CLUSTER_CHECKPOINT_PATTERN, uri), uri
    for uri in ("/data", "file:///x", "pvc://", "pvc://C/x", "pvc://-c", "pvc://c_d/x", "pvc://" + "c" * 64):
        assert not re.match(CLUSTER_CHECKPOINT_PATTERN, uri), uri


def test_manifest_whose_spec_is_not_an_object() -> None:
    from trainer.api.manifest import parse_manifest

    text = "apiVersion: cryptopredictor.dev/v1alpha1\nkind: TrainingRun\nmetadata: {name: x}\nspec: hello\n"
    with pytest.raises(SpecError) as info:
        parse_manifest(text, "x.yaml")
    assert info.value.problems == ["spec: must be an object, not str"]
