"""The chart's PrometheusRule, checked with the real promtool.

The rules under test are the ones the chart renders: each test runs ``helm template`` and writes the
PrometheusRule's ``spec`` to a temporary rules file, which ``promtool check rules`` and ``promtool test
rules`` (``tests/chart/promtool/trainingrun_alerts_test.yaml``, copied next to it) read. Tools come from
``.ci/install-tools.sh``; a missing tool fails the test with that hint.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.helm_tools import sync, tool

REPO = Path(__file__).resolve().parents[2]
PROMTOOL_TESTS = Path(__file__).resolve().parent / "promtool" / "trainingrun_alerts_test.yaml"
ALERTS = [
    "TrainingRunFailed",
    "TrainingRunStalled",
    "TrainingRunPendingTooLong",
    "TrainingRunNaNLoss",
    "TrainingRunOperatorDown",
]
# Labels each alert carries besides `severity` (the README's runbook section documents these);
# OperatorDown also has `instance` when the target exists but is down.
ALERT_LABELS = {
    "TrainingRunFailed": {"namespace", "name", "symbol", "reason"},
    "TrainingRunStalled": {"namespace", "name", "symbol"},
    "TrainingRunPendingTooLong": {"namespace", "name", "symbol", "reason"},
    "TrainingRunNaNLoss": {"namespace", "name", "symbol"},
    "TrainingRunOperatorDown": {"job"},
}
# The promtool tests' `job` label is this release's metrics Service: cpp-crypto-price-predictor-metrics.
RELEASE = "cpp"


def rendered_rule(*set_args: str) -> dict[str, Any]:
    """The PrometheusRule object `helm template` renders with the rule enabled (plus ``set_args``)."""
    tool("helm")
    out = sync.helm_template("--set", "metrics.prometheusRule.enabled=true", *set_args, release=RELEASE)
    rules = [d for d in sync.split_docs(out) if d["kind"] == "PrometheusRule"]
    assert len(rules) == 1, (
        "the chart must render exactly one PrometheusRule when metrics.prometheusRule.enabled"
    )
    return rules[0]


def write_rules(directory: Path, *set_args: str) -> Path:
    path = directory / "rules.yaml"
    path.write_text(yaml.safe_dump(rendered_rule(*set_args)["spec"], sort_keys=False))
    return path


def alerts_by_name(rule: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_promtool_check_rules(tmp_path: Path) -> None:
    rules = write_rules(tmp_path)
    res = subprocess.run([tool("promtool"), "check", "rules", str(rules)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in res.stdout + res.stderr


def test_promtool_unit_tests(tmp_path: Path) -> None:
    """Every alert fires when it should and stays silent when not, with the documented labels/annotations."""
    write_rules(tmp_path)
    shutil.copy(PROMTOOL_TESTS, tmp_path / PROMTOOL_TESTS.name)
    res = subprocess.run(
        [tool("promtool"), "test", "rules", PROMTOOL_TESTS.name], capture_output=True, text=True, cwd=tmp_path
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def test_unit_tests_cover_every_alert_both_ways() -> None:
    """Each alert has a test where it fires (with exp_annotations) and one where it must stay silent."""
    doc = yaml.safe_load(PROMTOOL_TESTS.read_text())
    assert doc["rule_files"] == ["rules.yaml"]
    fires: set[str] = set()
    silent: set[str] = set()
    for test in doc["tests"]:
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fires.add(case["alertname"])
                for alert in case["exp_alerts"]:
                    assert set(alert["exp_annotations"]) == {"summary", "description", "runbook_url"}
                    assert ALERT_LABELS[case["alertname"]] | {"severity"} <= set(alert["exp_labels"])
            else:
                silent.add(case["alertname"])
    assert fires == set(ALERTS), f"alerts never shown firing: {set(ALERTS) - fires}"
    assert silent == set(ALERTS), f"alerts never shown silent: {set(ALERTS) - silent}"


def test_alert_metadata_is_runbook_style() -> None:
    alerts = alerts_by_name(rendered_rule())
    assert sorted(alerts) == sorted(ALERTS)
    base = yaml.safe_load((REPO / "charts/crypto-price-predictor/values.yaml").read_text())["metrics"][
        "prometheusRule"
    ]["runbookBaseUrl"]
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert set(rule["annotations"]) == {"summary", "description", "runbook_url"}, name
        assert rule["annotations"]["runbook_url"] == f"{base}#{name.lower()}", name
        assert rule["for"], f"{name}: a `for:` keeps it from flapping"
    assert alerts["TrainingRunFailed"]["labels"]["severity"] == "critical"  # a failed run pages
    assert "trainingrun_failed_info" in alerts["TrainingRunFailed"]["expr"]


def test_for_severity_and_enabled_come_from_values() -> None:
    alerts = alerts_by_name(
        rendered_rule(
            "--set",
            "metrics.prometheusRule.alerts.TrainingRunFailed.for=15s",
            "--set",
            "metrics.prometheusRule.alerts.TrainingRunStalled.severity=critical",
            "--set",
            "metrics.prometheusRule.alerts.TrainingRunNaNLoss.enabled=false",
            "--set",
            "metrics.prometheusRule.operatorJob=trainop",
            "--set",
            "metrics.prometheusRule.runbookBaseUrl=https://wiki.example.com/ml",
        )
    )
    assert alerts["TrainingRunFailed"]["for"] == "15s"
    assert alerts["TrainingRunStalled"]["labels"]["severity"] == "critical"
    assert "TrainingRunNaNLoss" not in alerts
    assert 'job="trainop"' in alerts["TrainingRunOperatorDown"]["expr"]
    assert (
        alerts["TrainingRunFailed"]["annotations"]["runbook_url"]
        == "https://wiki.example.com/ml#trainingrunfailed"
    )


def test_bad_for_duration_is_rejected() -> None:
    tool("helm")
    res = sync.helm(
        "template",
        "x",
        str(sync.CHART),
        "--set",
        "metrics.prometheusRule.alerts.TrainingRunFailed.for=soon",
        check=False,
    )
    assert res.returncode != 0
    assert "metrics.prometheusRule.alerts.TrainingRunFailed.for" in res.stderr
