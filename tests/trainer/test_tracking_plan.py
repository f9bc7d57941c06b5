"""What a tracked run logs and under which identity (``trainer.tracking_plan``), the spec's ``tracking`` section and
the ``--mlflow-uri``/``--mlflow-experiment`` flags: pure functions, table-driven."""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import pytest

from trainer import cli
from trainer.api.errors import ConfigError
from trainer.api.manifest import SpecError, parse_spec
from trainer.api.status import EpochStats, TrainingRunStatus
from trainer.status_report import StatusReporter
from trainer.tracking_plan import (
    DEFAULT_EXPERIMENT,
    MAX_PARAM_LENGTH,
    check,
    epoch_metrics,
    flatten,
    is_transient,
    plan_of,
    run_key,
    split_final,
    tags_of,
)

TRACKED = {"symbol": "SOL", "tracking": {"mlflow": {"uri": "http://mlflow:5000"}}}
CLUSTER_ENV = {"TRAININGRUN_NAMESPACE": "ml", "TRAININGRUN_NAME": "sol-tft", "TRAININGRUN_UID": "u-1"}


class HttpError(Exception):
    def __init__(self, status: int) -> None:
        self.status = status

    def get_http_status_code(self) -> int:
        return self.status


def test_flatten_dots_keys_jsons_lists_redacts_and_bounds() -> None:
    doc = {
        "data": {"uri": "s3://b/{symbol}.csv", "start": None, "horizon": 7},
        "model": {"quantiles": [0.1, 0.5, 0.9], "dropout": 0.1},
        "checkpoint": {"s3Endpoint": "http://key:secret@minio:9000"},
        "nodeSelector": {},
        "suspend": False,
        "image": "x" * (MAX_PARAM_LENGTH + 10),
    }
    assert flatten(doc) == {
        "data.uri": "s3://b/{symbol}.csv",
        "data.horizon": "7",
        "model.quantiles": "[0.1, 0.5, 0.9]",
        "model.dropout": "0.1",
        "checkpoint.s3Endpoint": "http://***@minio:9000",
        "nodeSelector": "{}",
        "suspend": "false",
        "image": "x" * MAX_PARAM_LENGTH,
    }


@pytest.mark.parametrize(
    ("env", "uri", "key"),
    [
        (CLUSTER_ENV, "s3://b/runs/ml/sol-tft", "uid:u-1"),
        ({}, "/home/me/runs/sol", "checkpoint:/home/me/runs/sol"),
        ({}, "/home/me/it's", "sha256:" + "0" * 64),
    ],
    ids=["cluster-uid", "local-checkpoint", "quote-hashed"],
)
def test_run_key(env: dict[str, str], uri: str, key: str) -> None:
    got = run_key(env, uri)
    if key.startswith("sha256:"):
        assert got.startswith("sha256:") and len(got) == len(key) and "'" not in got
    else:
        assert got == key


def test_tags_name_the_trainingrun_and_the_checkpoint() -> None:
    assert tags_of(CLUSTER_ENV, "s3://b/p", "SOL") == {
        "checkpoint.uri": "s3://b/p",
        "symbol": "SOL",
        "trainingrun.namespace": "ml",
        "trainingrun.name": "sol-tft",
        "trainingrun.uid": "u-1",
    }
    assert tags_of({}, "/r", "SOL") == {"checkpoint.uri": "/r", "symbol": "SOL"}


def test_metrics_of_an_epoch_and_of_the_end() -> None:
    stats = EpochStats(2, 3, 0.3, 0.25, 0.99, 1234.5, 0.25, 2, 0.5)
    assert epoch_metrics(stats) == {
        "train_loss": 0.3,
        "val_loss": 0.25,
        "val_mase": 0.99,
        "samples_per_second": 1234.5,
    }
    final = {
        "valMase": 0.98,
        "garchPinball": 3.1,
        "skillVsGarch": float("nan"),
        "median": "learned",
        "bestEpoch": 2,
    }
    assert split_final(final) == (
        {"valMase": 0.98, "garchPinball": 3.1, "bestEpoch": 2.0},
        {"median": "learned"},
    )


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (ConnectionRefusedError("refused"), True),
        (TimeoutError("slow"), True),
        (HttpError(503), True),
        (HttpError(500), True),
        (HttpError(429), True),
        (HttpError(401), False),
        (HttpError(403), False),
        (HttpError(400), False),
        (ValueError("experiment deleted"), False),
    ],
)
def test_which_errors_are_retried(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_plan_of_a_tracked_spec(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.chdir(tmp_path)
    spec = parse_spec(TRACKED)
    plan = plan_of(spec, "sol-tft", "runs/sol", new_run=False, environ={})
    assert plan is not None
    assert plan.experiment == DEFAULT_EXPERIMENT and plan.uri == "http://mlflow:5000"
    assert plan.key == f"checkpoint:{os.path.join(tmp_path, 'runs/sol')}"
    assert plan.params["tracking.mlflow.uri"] == "http://mlflow:5000" and plan.params["symbol"] == "SOL"
    assert plan.deadline_s == 600.0
    from_env = plan_of(
        spec, "n", "s3://b/p", new_run=True, environ={"MLFLOW_EXPERIMENT_NAME": "mine", **CLUSTER_ENV}
    )
    assert (
        from_env is not None
        and from_env.experiment == "mine"
        and from_env.new_run
        and from_env.key == "uid:u-1"
    )
    assert plan_of(parse_spec({"symbol": "SOL"}), "n", "/r", new_run=False, environ={}) is None


def test_a_missing_client_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    check(parse_spec({"symbol": "SOL"}))  # not asked for: fine
    with pytest.raises(ConfigError, match=r"crypto-price-predictor\[tracking\]"):
        check(parse_spec(TRACKED))


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("http://alice:s3cret@mlflow:5000", "credentials do not belong in the URI"),
        ("mlflow:5000", "not an http(s) URL"),
        ("http://mlflow 5000", "not an http(s) URL"),
    ],
)
def test_spec_refuses_bad_uris_without_echoing_secrets(uri: str, problem: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec({"symbol": "SOL", "tracking": {"mlflow": {"uri": uri}}})
    assert "spec.tracking.mlflow.uri" in str(err.value) and problem in str(err.value)
    assert "s3cret" not in str(err.value)


def test_spec_defaults() -> None:
    mlflow = parse_spec(
        {**TRACKED, "tracking": {"mlflow": {"uri": "https://m", "credentialsSecret": {"name": "a"}}}}
    )
    assert mlflow.tracking is not None and mlflow.tracking.mlflow is not None
    ref = mlflow.tracking.mlflow.credentials_secret
    assert ref is not None and (ref.username_key, ref.password_key) == (
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
    )
    assert parse_spec({"symbol": "SOL"}).tracking is None


def spec_of(*argv: str) -> Any:
    args = cli.build_parser().parse_args(["train", *argv])
    return cli._resolve_spec(args)[1]


def test_cli_flags_set_the_tracking_spec() -> None:
    spec = spec_of("--mlflow-uri", "http://127.0.0.1:5000", "--mlflow-experiment", "sol")
    assert spec.tracking.mlflow.uri == "http://127.0.0.1:5000" and spec.tracking.mlflow.experiment == "sol"
    assert spec_of().tracking is None
    with pytest.raises(SpecError, match="--mlflow-uri"):
        spec_of("--mlflow-experiment", "sol")


def test_the_status_names_the_mlflow_run() -> None:
    bodies: list[dict[str, Any]] = []
    reporter = StatusReporter(bodies.append, throttle_seconds=0)
    reporter.tracking(run_id="abc", experiment_id="1", uri="http://mlflow:5000")
    assert bodies == []  # sent with the next update
    reporter.flush()
    assert bodies == [
        {"status": {"tracking": {"mlflowRunId": "abc", "experimentId": "1", "uri": "http://mlflow:5000"}}}
    ]
    parsed = TrainingRunStatus.parse(bodies[0]["status"])
    assert parsed.tracking is not None and parsed.tracking.mlflow_run_id == "abc"
