"""TRAINOP_* settings and the metrics the alert rules are written against."""

from __future__ import annotations

import io
import logging

import pytest
from prometheus_client import generate_latest
from pydantic import ValidationError
from trainop import logs, prometheus
from trainop.__main__ import describe_errors
from trainop.settings import Settings, parse_duration


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in (
        "NAMESPACES",
        "DEFAULT_IMAGE",
        "METRICS_PORT",
        "STALL_TIMEOUT",
        "CHECKPOINT_PREFIX",
        "PEERING",
        "TRAINER_DEFAULTS",
        "TRAINER_PROFILES",
    ):
        monkeypatch.delenv(f"TRAINOP_{key}", raising=False)
    s = Settings()
    assert s.namespaces == [] and s.metrics_port == 8080 and parse_duration(s.stall_timeout) == 900
    assert s.default_image == "ghcr.io/crypto-price-predictor/trainer:0.1.0"
    assert s.trainer_defaults.given() == {} and s.trainer_profiles == {}  # the built-in values only
    assert s.status_throttle_seconds == 10 and s.timer_interval_seconds == 30
    assert s.checkpoint_prefix is None and s.peering is None


def test_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINOP_NAMESPACES", "ml, research,")
    monkeypatch.setenv("TRAINOP_METRICS_PORT", "9100")
    monkeypatch.setenv("TRAINOP_STALL_TIMEOUT", "1h30m")
    monkeypatch.setenv("TRAINOP_CHECKPOINT_PREFIX", "s3://ckpt/runs/")
    monkeypatch.setenv("TRAINOP_S3_ENDPOINT", "")
    s = Settings()
    assert s.namespaces == ["ml", "research"] and s.metrics_port == 9100
    assert (
        parse_duration(s.stall_timeout) == 5400
        and s.checkpoint_prefix == "s3://ckpt/runs"
        and s.s3_endpoint is None
    )
    assert "checkpoint_prefix='s3://ckpt/runs'" in s.describe()


def test_checkpoint_volume_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("SIZE", "STORAGE_CLASS", "ACCESS_MODE"):
        monkeypatch.delenv(f"TRAINOP_CHECKPOINT_VOLUME_{key}", raising=False)
    s = Settings()
    assert (s.checkpoint_volume_size, s.checkpoint_volume_access_mode) == ("10Gi", "ReadWriteOnce")
    assert s.checkpoint_volume_storage_class is None
    monkeypatch.setenv("TRAINOP_CHECKPOINT_VOLUME_SIZE", "50Gi")
    monkeypatch.setenv("TRAINOP_CHECKPOINT_VOLUME_STORAGE_CLASS", "")  # what the chart passes for "default"
    monkeypatch.setenv("TRAINOP_CHECKPOINT_VOLUME_ACCESS_MODE", "ReadWriteMany")
    s = Settings()
    assert s.checkpoint_volume_size == "50Gi" and s.checkpoint_volume_access_mode == "ReadWriteMany"
    assert s.checkpoint_volume_storage_class is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("METRICS_PORT", "abc"),
        ("STALL_TIMEOUT", "soon"),
        ("CHECKPOINT_PREFIX", "s3://X/y"),
        ("CHECKPOINT_PREFIX", "/data/checkpoints"),  # each pod's own filesystem: lost with the pod
        ("S3_ENDPOINT", "minio.minio:9000"),  # no scheme: every Job would fail in its pod
        ("CHECKPOINT_VOLUME_SIZE", "lots"),  # every claim would be rejected
        ("CHECKPOINT_VOLUME_STORAGE_CLASS", "Fast_SSD"),
        ("CHECKPOINT_VOLUME_ACCESS_MODE", "ReadOnlyMany"),  # the trainer writes its checkpoints
    ],
)
def test_bad_env_fails_with_the_name(monkeypatch: pytest.MonkeyPatch, key: str, value: str) -> None:
    monkeypatch.setenv(f"TRAINOP_{key}", value)
    with pytest.raises(ValidationError, match=key.lower()):
        Settings()


def test_trainer_defaults_and_profiles_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the chart renders (toJson of trainer.defaults / trainer.profiles), camelCase as in a spec."""
    monkeypatch.setenv(
        "TRAINOP_TRAINER_DEFAULTS",
        '{"image": "registry.example/trainer:2.0", "nodeSelector": {"pool": "gpu"}}',
    )
    monkeypatch.setenv(
        "TRAINOP_TRAINER_PROFILES",
        '{"cpu": {"resources": {"limits": {"cpu": "4"}}, "tolerations": [], "priorityClassName": null}}',
    )
    s = Settings()
    assert s.trainer_defaults.given() == {
        "image": "registry.example/trainer:2.0",
        "node_selector": {"pool": "gpu"},
    }
    assert s.default_image == "registry.example/trainer:2.0"  # one setting: the flat field follows the JSON
    cpu = s.trainer_profiles["cpu"].given()
    assert set(cpu) == {"resources", "tolerations"} and cpu["tolerations"] == []  # null is absent, [] is not
    assert cpu["resources"].limits == {"cpu": "4"}
    monkeypatch.setenv("TRAINOP_TRAINER_PROFILES", "")
    assert Settings().trainer_profiles == {}


def test_flat_default_image_and_stall_timeout_are_the_defaults_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAINOP_DEFAULT_IMAGE", "registry.example/legacy:1")
    monkeypatch.setenv("TRAINOP_STALL_TIMEOUT", "45m")
    s = Settings()
    assert s.trainer_defaults.given() == {"image": "registry.example/legacy:1", "stall_timeout": "45m"}
    monkeypatch.setenv("TRAINOP_TRAINER_DEFAULTS", '{"image": "registry.example/legacy:1"}')
    assert Settings().default_image == "registry.example/legacy:1"  # the same value twice is one setting
    monkeypatch.setenv("TRAINOP_TRAINER_DEFAULTS", '{"stallTimeout": "1h"}')
    with pytest.raises(ValidationError) as err:
        Settings()
    assert describe_errors(err.value) == [
        "Value error, TRAINOP_STALL_TIMEOUT ('45m') and TRAINOP_TRAINER_DEFAULTS stallTimeout ('1h') differ; "
        "set one of them"
    ]


@pytest.mark.parametrize(
    ("variable", "value", "line"),
    [
        ("PROFILES", '{"cpu": {"gpus": 1}}', "cpu.gpus: Extra inputs are not permitted"),
        (
            "PROFILES",
            '{"cpu": {"training": {"device": "cpu"}}}',
            "cpu.training: Extra inputs are not permitted",
        ),
        ("PROFILES", '{"A100": {}}', "A100: Value error, 'A100' is not a profile name (spec.profile)"),
        (
            "PROFILES",
            '{"a": {"nodeSelector": {"Bad Key": "x"}}}',
            "a.nodeSelector: Value error, 'Bad Key' is not",
        ),
        (
            "PROFILES",
            '{"a": {"resources": {"limits": {"cpu": "lots"}}}}',
            "a.resources.limits: Value error, cpu:",
        ),
        (
            "PROFILES",
            '{"a": {"tolerations": [{"operator": "Maybe"}]}}',
            "a.tolerations[0].operator: Input should",
        ),
        ("PROFILES", '{"a": []}', "a: Input should be a valid dictionary or instance of TrainerDefaults"),
        ("DEFAULTS", '{"image": "Bad Image"}', "image: Value error, 'Bad Image' is not an image reference"),
        ("DEFAULTS", '{"stallTimeout": "soon"}', "stallTimeout: String should match pattern"),
        ("DEFAULTS", "[1]", "Value error, must be a JSON object, not list"),
        ("DEFAULTS", "{bad", "Value error, not JSON (Expecting property name"),
    ],
)
def test_bad_trainer_defaults_name_the_variable_and_the_key(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, line: str
) -> None:
    monkeypatch.setenv(f"TRAINOP_TRAINER_{variable}", value)
    with pytest.raises(ValidationError) as err:
        Settings()
    (got,) = describe_errors(err.value)
    assert got.startswith(f"TRAINOP_TRAINER_{variable}: {line}"), got


def test_parse_duration() -> None:
    assert parse_duration("2s") == 2 and parse_duration("15m") == 900 and parse_duration("1h30m") == 5400
    assert parse_duration("500ms") == 0.5
    with pytest.raises(ValueError):
        parse_duration("15")


def _scrape() -> str:
    return generate_latest(prometheus.REGISTRY).decode()


def _run(phase: str, reason: str = "", **status: object) -> dict[str, object]:
    conditions = (
        [
            {
                "type": "Stalled",
                "status": "True",
                "reason": "NoProgress",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ]
        if status.pop("stalled", False)
        else []
    )
    return {
        "metadata": {"namespace": "mx", "name": "r1"},
        "spec": {"symbol": "SOL"},
        "status": {"phase": phase, "reason": reason, "conditions": conditions, **status},
    }


def test_run_gauges_follow_the_body_and_vanish_on_delete() -> None:
    prometheus.observe_run(_run("Pending", "Unschedulable"), "SOL")
    text = _scrape()
    assert 'trainingrun_phase{name="r1",namespace="mx",phase="Pending",symbol="SOL"} 1.0' in text
    assert 'trainingrun_phase{name="r1",namespace="mx",phase="Running",symbol="SOL"} 0.0' in text
    assert (
        'trainingrun_pending_reason_info{name="r1",namespace="mx",reason="Unschedulable",symbol="SOL"} 1.0'
        in text
    )
    prometheus.observe_run(
        _run(
            "Running",
            "PodRunning",
            stalled=True,
            restarts=2,
            progress={
                "epoch": 41,
                "totalEpochs": 100,
                "trainLoss": 0.7,
                "samplesPerSecond": 1234,
                "valLoss": 0.5,
                "bestValLoss": 0.4,
                "lastProgressTime": "2026-01-01T00:00:10Z",
            },
        ),
        "SOL",
    )
    text = _scrape()
    assert "trainingrun_pending_reason_info{" not in text.replace(
        "# HELP trainingrun_pending_reason_info", ""
    )
    assert 'trainingrun_epoch{name="r1",namespace="mx",symbol="SOL"} 41.0' in text
    assert 'trainingrun_total_epochs{name="r1",namespace="mx",symbol="SOL"} 100.0' in text
    assert 'trainingrun_train_loss{name="r1",namespace="mx",symbol="SOL"} 0.7' in text
    assert 'trainingrun_samples_per_second{name="r1",namespace="mx",symbol="SOL"} 1234.0' in text
    assert 'trainingrun_restarts{name="r1",namespace="mx",symbol="SOL"} 2.0' in text
    assert 'trainingrun_val_loss{name="r1",namespace="mx",symbol="SOL"} 0.5' in text
    assert 'trainingrun_best_val_loss{name="r1",namespace="mx",symbol="SOL"} 0.4' in text
    assert 'trainingrun_stalled{name="r1",namespace="mx",symbol="SOL"} 1.0' in text
    assert (
        'trainingrun_last_progress_timestamp_seconds{name="r1",namespace="mx",symbol="SOL"} 1.76722561e+09'
        in text
    )
    prometheus.observe_run(_run("Failed", "NaNLoss"), "SOL")
    text = _scrape()
    assert 'trainingrun_failed_info{name="r1",namespace="mx",reason="NaNLoss",symbol="SOL"} 1.0' in text
    assert 'trainingrun_stalled{name="r1",namespace="mx",symbol="SOL"} 0.0' in text
    assert 'trainingrun_restarts{name="r1",namespace="mx",symbol="SOL"} 0.0' in text  # none in this status
    assert 'trainingrun_train_loss{name="r1"' not in text  # no progress in this status: the series goes
    prometheus.forget_run("mx", "r1")
    assert 'name="r1"' not in _scrape()


def test_transition_counters_and_handler_metrics() -> None:
    prometheus.count_transition("cx", "SOL", "Running", "Failed", "OOMKilled")
    prometheus.count_transition("cx", "SOL", "Failed", "Failed", "OOMKilled")  # no transition: not counted
    prometheus.count_transition("cx", "SOL", "Running", "Succeeded", "Completed")
    # Every handler's series exists before its first invocation (a rate() sees the first ones).
    text = _scrape()
    for handler in ("ensure_job", "spec_changed", "job_event", "pod_event", "delete_children", "stall_check"):
        assert f'trainingrun_reconcile_errors_total{{handler="{handler}"}}' in text
        assert f'trainingrun_reconcile_duration_seconds_count{{handler="{handler}"}}' in text

    def sample(name: str) -> float:
        value = prometheus.REGISTRY.get_sample_value(name, {"handler": "delete_children"})
        assert value is not None
        return value

    errors, calls = (
        sample("trainingrun_reconcile_errors_total"),
        sample("trainingrun_reconcile_duration_seconds_count"),
    )
    with prometheus.timed("delete_children"):
        pass
    with pytest.raises(RuntimeError), prometheus.timed("delete_children"):
        raise RuntimeError("boom")
    text = _scrape()
    assert 'trainingrun_failures_total{namespace="cx",reason="OOMKilled",symbol="SOL"} 1.0' in text
    assert 'trainingrun_succeeded_total{namespace="cx",symbol="SOL"} 1.0' in text
    assert sample("trainingrun_reconcile_errors_total") == errors + 1
    assert sample("trainingrun_reconcile_duration_seconds_count") == calls + 2


@pytest.mark.parametrize(
    ("variable", "value", "start"),
    [
        ("TRAINOP_METRICS_PORT", "abc", "trainop: TRAINOP_METRICS_PORT: "),
        (
            "TRAINOP_TRAINER_PROFILES",
            '{"cpu": {"nodeSelector": {"a b": "c"}}}',
            "trainop: TRAINOP_TRAINER_PROFILES: ",
        ),
    ],
)
def test_python_m_trainop_refuses_bad_settings_with_the_variable_name(
    variable: str, value: str, start: str
) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, variable: value}
    out = subprocess.run(
        [sys.executable, "-m", "trainop"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.startswith(start)
    assert "Traceback" not in out.stderr


def test_log_lines_about_a_run_carry_it() -> None:
    record = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "Handler succeeded", None, None)
    record.k8s_ref = {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingRun",
        "name": "r",
        "namespace": "ml",
    }
    assert logs.RunFields().filter(record) and record.run == {"namespace": "ml", "name": "r"}
    job = logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, "x", None, None)
    job.k8s_ref = {"kind": "Job", "name": "r-train", "namespace": "ml"}
    assert logs.RunFields().filter(job) and not hasattr(job, "run")
    # The JSON lines themselves: test_operator_integration's test_logs_are_json_with_the_run_...


def test_log_format_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().log_format == "auto"
    monkeypatch.setenv("TRAINOP_LOG_FORMAT", "yaml")
    with pytest.raises(ValidationError, match="log_format"):
        Settings()
    assert logs.wants_json("json") and not logs.wants_json("text")
    assert logs.wants_json("auto", io.StringIO())  # not a terminal: a pod's log
