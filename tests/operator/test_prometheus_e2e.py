"""End to end: a real Prometheus scrapes the real operator while a TrainingRun fails, and the chart's
TrainingRunFailed alert fires.

* Kubernetes API: the ``kube_api`` / ``kube_namespace`` fixtures (the emulator in tests/support/kubeemu, or the
  cluster in $KUBECONFIG);
* the operator and Prometheus: ``tests.support.prometheus.operator_and_prometheus`` (shared with the dashboard
  test): ``python -m trainop`` as a subprocess with the chart's env contract (TRAINOP_*), watching only the
  test namespace, and the Debian ``prometheus`` binary from ``.ci/install-tools.sh`` scraping it every second
  with ``honor_labels`` under the job name a ServiceMonitor would give it; here it also loads the rules
  ``helm template`` renders with short ``for:`` overrides via values;
* the failure: a TrainingRun the CRD admits but the spec model refuses (an invalid S3 bucket name), so the
  operator marks it Failed/InvalidSpec without training anything.

Waits poll the APIs (targets, the run's status, alerts) instead of sleeping blindly."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm_tools import sync, tool
from tests.support.kubeemu.fixtures import KubeApi, kube_api, kube_namespace  # noqa: F401  (pytest fixtures)
from tests.support.prometheus import JOB, RELEASE, get_json, operator_and_prometheus
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]


FAILING_RUN = """
apiVersion: cryptopredictor.dev/v1alpha1
kind: TrainingRun
metadata:
  name: sol-badbucket
spec:
  symbol: SOL
  training: {epochs: 1, device: cpu}
  checkpoint:
    uri: s3://Bad_Bucket/runs    # the CRD admits any string; the spec model refuses this bucket name
  resources:
    limits: {nvidia.com/gpu: 1}
  tolerations:
    - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
"""


def test_failed_run_fires_training_run_failed(
    kube_api: KubeApi,  # noqa: F811
    kube_namespace: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    tool("helm")

    # The chart's rules, with short `for:` so the test takes seconds (values overrides, as a user would).
    rendered = sync.helm_template(
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.alerts.TrainingRunFailed.for=2s",
        "--set",
        "metrics.prometheusRule.alerts.TrainingRunOperatorDown.for=1m",
        release=RELEASE,
    )
    (rule,) = [d for d in sync.split_docs(rendered) if d["kind"] == "PrometheusRule"]
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"], sort_keys=False))

    # The CRD, as `helm install` would create it from crds/.
    kube_api.kubectl("apply", "-f", str(REPO / "charts/crypto-price-predictor/crds/trainingruns.yaml"))

    with operator_and_prometheus(kube_api, kube_namespace, tmp_path, [rules_file]) as prom:
        prom_url, prom_log, operator_log = prom.url, prom.log, prom.operator_log
        run_file = tmp_path / "run.yaml"
        run_file.write_text(FAILING_RUN)
        kube_api.kubectl("apply", "-n", kube_namespace, "-f", str(run_file))

        def run_failed() -> dict[str, Any] | None:
            out = kube_api.kubectl("get", "trainingrun", "sol-badbucket", "-n", kube_namespace, "-o", "json")
            status = json.loads(out.stdout).get("status") or {}
            return status if status.get("phase") == "Failed" else None

        status = wait_for("the run to become Failed", run_failed, 60, operator_log)
        assert status["reason"] == "InvalidSpec"

        def failed_series() -> list[dict[str, Any]]:
            query = urllib.parse.quote(f'trainingrun_failed_info{{namespace="{kube_namespace}"}} == 1')
            return list(get_json(f"{prom_url}/api/v1/query?query={query}")["data"]["result"])

        (series,) = wait_for("trainingrun_failed_info in Prometheus", failed_series, 60, prom_log)
        assert series["metric"]["job"] == JOB
        assert series["metric"]["name"] == "sol-badbucket"

        def firing() -> dict[str, Any] | None:
            for alert in get_json(f"{prom_url}/api/v1/alerts")["data"]["alerts"]:
                labels = alert["labels"]
                if (
                    labels.get("alertname") == "TrainingRunFailed"
                    and labels.get("namespace") == kube_namespace
                    and alert["state"] == "firing"
                ):
                    return dict(alert)
            return None

        alert = wait_for("TrainingRunFailed to be firing", firing, 90, prom_log)
        assert alert["labels"] == {
            "alertname": "TrainingRunFailed",
            "severity": "critical",
            "namespace": kube_namespace,
            "name": "sol-badbucket",
            "symbol": "SOL",
            "reason": "InvalidSpec",
        }
        annotations = alert["annotations"]
        assert (
            annotations["summary"] == f"TrainingRun {kube_namespace}/sol-badbucket (SOL) failed: InvalidSpec"
        )
        assert annotations["runbook_url"].endswith("README.md#trainingrunfailed")

        # The operator is up, so its down-alert must not be pending or firing.
        states = {
            a["labels"]["alertname"]: a["state"]
            for a in get_json(f"{prom_url}/api/v1/alerts")["data"]["alerts"]
        }
        assert "TrainingRunOperatorDown" not in states, states
