"""``python -m trainop submit | logs | wait | list`` without a cluster (trainop.client_cli): bad input refused
before any API call (exit 2, the file and field named), the spec comparison of a second submit, the table of
``list``, and ``python -m trainop`` without arguments still being the operator."""

from __future__ import annotations

import argparse
import json
import pathlib
from datetime import datetime, timezone
from typing import Any

import pytest
import yaml
from trainop import __main__ as entry_point
from trainop import client_cli
from trainop.client_cli import (
    UsageError,
    age,
    describe,
    duration,
    list_table,
    main,
    manifest_namespace,
    spec_differences,
)

from tests.operator.test_integration import SAMPLE
from trainer.api.manifest import parse_spec


@pytest.fixture()
def no_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any API call fails the test: what these tests refuse must be refused before one."""

    def connect(*_: Any) -> None:
        raise AssertionError("the command reached for the cluster")

    monkeypatch.setattr(client_cli.Cluster, "connect", connect)


def write(tmp_path: pathlib.Path, doc: Any, name: str = "run.yaml") -> str:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return str(path)


def sample(**spec: Any) -> dict[str, Any]:
    doc = json.loads(json.dumps(SAMPLE))
    doc["spec"].update(spec)
    return dict(doc)


@pytest.mark.parametrize(
    ("doc", "line"),
    [
        (
            sample(training={"epochs": 0}),
            "spec.training.epochs: Input should be greater than or equal to 1 (got 0)",
        ),
        (sample(symbl="SOL"), "spec.symbl: unknown field; allowed: "),
        ({**sample(), "kind": "Job"}, "kind: must be TrainingRun (got 'Job')"),
        ("a: [1,", "not valid YAML"),
    ],
)
def test_a_bad_manifest_is_refused_before_any_api_call(
    doc: Any, line: str, tmp_path: pathlib.Path, no_cluster: None, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, doc)
    assert main(["submit", path, "--follow"]) == 2
    err = capsys.readouterr().err
    assert f"trainop: {path}: {line}" in err, err


def test_a_missing_file_and_a_namespace_conflict_are_bad_input(
    tmp_path: pathlib.Path, no_cluster: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["submit", str(tmp_path / "nope.yaml")]) == 2
    assert f"{tmp_path / 'nope.yaml'}: file not found" in capsys.readouterr().err
    doc = sample()
    doc["metadata"]["namespace"] = "team-a"
    path = write(tmp_path, doc)
    assert main(["submit", path, "-n", "team-b"]) == 2
    assert "metadata.namespace: 'team-a' differs from --namespace 'team-b'" in capsys.readouterr().err


def test_no_kubeconfig_is_an_api_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for var in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert main(["list"]) == 4
    assert "trainop: no kubeconfig: set KUBECONFIG or --kubeconfig" in capsys.readouterr().err


def test_manifest_namespace() -> None:
    assert manifest_namespace({"metadata": {}}, None, "f") is None
    assert manifest_namespace({"metadata": {"namespace": "a"}}, None, "f") == "a"
    assert manifest_namespace({"metadata": {"namespace": "a"}}, "a", "f") == "a"
    assert manifest_namespace({"metadata": {}}, "b", "f") == "b"
    with pytest.raises(UsageError):
        manifest_namespace({"metadata": {"namespace": "a"}}, "b", "f")


def test_spec_differences() -> None:
    submitted = parse_spec(sample()["spec"])
    stored = dict(
        submitted.model_dump(by_alias=True, mode="json")
    )  # every default filled in, as the API does
    assert spec_differences(stored, submitted) == []
    assert spec_differences(SAMPLE["spec"], submitted) == []
    changed = json.loads(json.dumps(stored))
    changed["training"]["epochs"] = 5
    changed["model"]["hiddenSize"] = 16
    assert spec_differences(changed, submitted) == [
        "spec.model.hiddenSize: 16 in the cluster, 32 in the file",
        "spec.training.epochs: 5 in the cluster, 100 in the file",
    ]
    assert spec_differences({"symbol": "sol!"}, submitted)[0].startswith(
        "the existing spec does not validate"
    )


def test_at_most_five_differences_are_listed() -> None:
    submitted = parse_spec(sample()["spec"])
    stored = dict(submitted.model_dump(by_alias=True, mode="json"))
    stored["training"] = {**stored["training"], "epochs": 1, "batchSize": 2, "seed": 3, "learningRate": 0.1}
    stored["model"] = {**stored["model"], "hiddenSize": 8, "dropout": 0.5}
    lines = spec_differences(stored, submitted)
    assert len(lines) == 6 and lines[-1] == "... and 1 more"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90.0), ("2.5", 2.5), ("90s", 90.0), ("15m", 900.0), ("1h30m", 5400.0)]
)
def test_duration(text: str, seconds: float) -> None:
    assert duration(text) == seconds


def test_duration_refuses_garbage() -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration("soon")


NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("created", "shown"),
    [
        ("2026-01-02T11:59:15Z", "45s"),
        ("2026-01-02T11:48:00Z", "12m"),
        ("2026-01-02T07:00:00Z", "5h"),
        ("2025-12-30T12:00:00Z", "3d"),
        ("2026-01-02T12:00:05Z", "0s"),  # a clock a little ahead
        (None, "<unknown>"),
    ],
)
def test_age(created: str | None, shown: str) -> None:
    assert age(created, NOW) == shown


def run(name: str, ns: str = "ml", **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-01-02T11:58:00Z"},
        "spec": {"symbol": "SOL"},
        "status": status,
    }


def test_list_table() -> None:
    runs = [
        run("wf", phase="Running", reason="Running", foldsDisplay="2/4"),
        run("a", phase="Succeeded", reason="Completed", progress={"epochDisplay": "3/3"}),
        run("new", ns="other"),
    ]
    assert list_table(runs[:2], NOW, all_namespaces=False).splitlines() == [
        "NAME   SYMBOL   PHASE       EPOCH   FOLDS   REASON      AGE",
        "a      SOL      Succeeded   3/3             Completed   2m",
        "wf     SOL      Running             2/4     Running     2m",
    ]
    table = list_table(runs, NOW, all_namespaces=True).splitlines()
    assert table[0].split()[:2] == ["NAMESPACE", "NAME"] and table[-1].split() == [
        "other",
        "new",
        "SOL",
        "Pending",
        "2m",
    ]


def test_describe() -> None:
    assert describe(run("a")) == "phase Pending"
    assert describe(run("a", phase="Running", reason="Running", progress={"epochDisplay": "2/3"})) == (
        "phase Running (Running), epoch 2/3"
    )


@pytest.mark.parametrize(
    ("argv", "operator"), [([], True), (["operator"], True), (["list"], False), (["--help"], False)]
)
def test_no_arguments_is_still_the_operator(
    argv: list[str], operator: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(entry_point, "main", lambda: calls.append("operator") or 0)
    monkeypatch.setattr(client_cli, "main", lambda a: calls.append(f"client {a}") or 0)
    assert entry_point.entry(argv) == 0
    assert calls == (["operator"] if operator else [f"client {argv}"])


class FakeCluster:
    """The cluster's side of ``submit``: one run per name, as the API server keeps it (defaults filled in)."""

    namespace = "default"

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], dict[str, Any]] = {}

    def create_run(self, ns: str, body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        key = (ns, body["metadata"]["name"])
        if key in self.runs:
            return self.runs[key], False
        stored = dict(body, spec=parse_spec(body["spec"]).model_dump(by_alias=True, mode="json"))
        self.runs[key] = stored
        return stored, True


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeCluster:
    cluster = FakeCluster()
    monkeypatch.setattr(client_cli.Cluster, "connect", lambda *_: cluster)
    return cluster


def test_submit_creates_once_and_refuses_a_changed_spec(
    tmp_path: pathlib.Path, fake: FakeCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, sample())
    assert main(["submit", path, "-n", "ml"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "trainingrun sol-tft created in namespace ml",
        f"follow it: python -m trainop submit {path} --follow -n ml",
    ]
    assert main(["submit", path, "-n", "ml"]) == 0
    assert (
        "trainingrun sol-tft exists in namespace ml (phase Pending); not created again"
        in capsys.readouterr().out
    )
    assert list(fake.runs) == [("ml", "sol-tft")]
    changed = write(tmp_path, sample(training={"epochs": 7}), "changed.yaml")
    assert main(["submit", changed, "-n", "ml", "--follow"]) == 5
    out = capsys.readouterr().out
    assert "exists in namespace ml with a different spec; nothing was changed" in out
    assert "spec.training.epochs: 100 in the cluster, 7 in the file" in out


def test_ctrl_c_while_following_leaves_the_run_and_says_how_to_reattach(
    tmp_path: pathlib.Path,
    fake: FakeCluster,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    def interrupted(*_: Any, **__: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(client_cli, "follow", interrupted)
    path = write(tmp_path, sample())
    assert main(["submit", path, "--follow"]) == 130
    err = capsys.readouterr().err
    assert "stopped following; sol-tft goes on in namespace default" in err
    assert f"Re-attach: python -m trainop submit {path} --follow -n default" in err
    assert list(fake.runs) == [("default", "sol-tft")]  # created, not deleted
