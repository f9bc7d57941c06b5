"""End to end: a real Prometheus scrapes the real operator while a TrainingRun fails, and the chart's
TrainingRunFailed alert fires.

* Kubernetes API: the ``kube_api`` / ``kube_namespace`` fixtures (the emulator in tests/support/kubeemu, or the
  cluster in $KUBECONFIG);
* the operator: ``python -m trainop`` as a subprocess with the chart's env contract (TRAINOP_*), watching
  only the test namespace, metrics on a free 127.0.0.1 port;
* Prometheus: the Debian ``prometheus`` binary from ``.ci/install-tools.sh`` on 127.0.0.1, scraping the
  operator every second with ``honor_labels`` (what the chart's ServiceMonitor sets) under the job name a
  ServiceMonitor would give it, and loading the rules ``helm template`` renders with short ``for:``
  overrides via values;
* the failure: a TrainingRun the CRD admits but the spec model refuses (an invalid S3 bucket name), so the
  operator marks it Failed/InvalidSpec without training anything.

Waits poll the APIs (targets, the run's status, alerts) instead of sleeping blindly."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.helm_tools import sync, tool
from tests.support.kubeemu.fixtures import KubeApi, kube_api, kube_namespace  # noqa: F401  (pytest fixtures)
from tests.support.procs import stop_process
from tests.support.waiting import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
RELEASE = "cpp"
JOB = f"{RELEASE}-crypto-price-predictor-metrics"  # the metrics Service name = a ServiceMonitor's job label


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


@contextlib.contextmanager
def process(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a subprocess this test owns; terminate it (by its own pid) afterwards."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        try:
            yield proc
        finally:
            stop_process(proc)


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
    prometheus_bin = tool("prometheus")
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

    metrics_port = free_port()
    operator_env = {
        **os.environ,
        **kube_api.env,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")]),
        "TRAINOP_NAMESPACES": kube_namespace,
        "TRAINOP_DEFAULT_IMAGE": "ghcr.io/crypto-price-predictor/trainer:0.1.0",
        "TRAINOP_METRICS_PORT": str(metrics_port),
        "TRAINOP_METRICS_HOST": "127.0.0.1",
        "TRAINOP_STALL_TIMEOUT": "15m",
        "TRAINOP_STATUS_THROTTLE_SECONDS": "1",
        "TRAINOP_S3_ENDPOINT": "http://127.0.0.1:1",
        "TRAINOP_S3_SECRET_NAME": "s3-creds",
        "TRAINOP_CHECKPOINT_PREFIX": "s3://models/runs",
        "TRAINOP_TIMER_INTERVAL_SECONDS": "2",
    }
    operator_log = tmp_path / "operator.log"
    metrics_url = f"http://127.0.0.1:{metrics_port}"

    prom_port = free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules_file)],
        "scrape_configs": [
            {
                "job_name": JOB,
                "honor_labels": True,
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{metrics_port}"]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    prom_log = tmp_path / "prometheus.log"
    prom_args = [
        prometheus_bin,
        f"--config.file={config_file}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        "--storage.tsdb.retention.time=1h",
    ]

    with (
        process([sys.executable, "-m", "trainop"], operator_log, operator_env),
        process(prom_args, prom_log),
    ):
        wait_for(
            "the operator's /healthz",
            lambda: get_text(f"{metrics_url}/healthz") is not None,
            60,
            operator_log,
        )

        def target_up() -> bool:
            targets = get_json(f"{prom_url}/api/v1/targets")["data"]["activeTargets"]
            return any(t["labels"]["job"] == JOB and t["health"] == "up" for t in targets)

        wait_for("Prometheus to scrape the operator (target up)", target_up, 60, prom_log)

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
