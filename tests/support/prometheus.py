"""A real Prometheus scraping the real operator, both as subprocesses this test process owns.

Why shared: the alert test (tests/operator/test_prometheus_e2e.py) and the dashboard test
(tests/chart/test_dashboard.py) both judge PromQL by evaluating it against what ``python -m trainop`` really
exports, and they must start the two processes the same way: the operator with the chart's env contract
(TRAINOP_*), watching one namespace, metrics on a free 127.0.0.1 port; Prometheus (the Debian binary from
``.ci/install-tools.sh``) on 127.0.0.1, scraping it every second with ``honor_labels`` (what the chart's
ServiceMonitor sets) under the job name a ServiceMonitor would give it.

``Prometheus.query`` returns the HTTP API's answer whether it is a result or an error (a 400 with
``status: error`` for a bad expression), so a test can assert on either."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.helm_tools import tool
from tests.support.kubeemu.fixtures import KubeApi
from tests.support.procs import stop_process
from tests.support.waiting import wait_for

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


def operator_env(kube_api: KubeApi, namespace: str, metrics_port: int) -> dict[str, str]:
    """The operator's environment as the chart sets it, for this tree's trainop, watching ``namespace``."""
    return {
        **os.environ,
        **kube_api.env,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "operator")]),
        "TRAINOP_NAMESPACES": namespace,
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


@dataclass(frozen=True)
class Prometheus:
    url: str
    log: Path
    operator_log: Path

    def query(self, expr: str) -> dict[str, Any]:
        """``/api/v1/query`` (instant, now): the JSON answer, ``status`` "success" or "error"."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return dict(json.load(resp))
        except urllib.error.HTTPError as err:  # 400/422/503 carry the error as JSON
            return dict(json.loads(err.read().decode() or "{}") or {"status": "error", "error": str(err)})

    def label_values(self, label: str, selector: str) -> list[str]:
        """``/api/v1/label/<label>/values?match[]=selector``: what Grafana's ``label_values(selector, label)``
        asks (an error answer raises)."""
        query = urllib.parse.urlencode({"match[]": selector})
        answer = get_json(f"{self.url}/api/v1/label/{urllib.parse.quote(label)}/values?{query}")
        return [str(v) for v in answer["data"]]

    def target_up(self, job: str = JOB) -> bool:
        targets = get_json(f"{self.url}/api/v1/targets")["data"]["activeTargets"]
        return any(t["labels"]["job"] == job and t["health"] == "up" for t in targets)


@contextlib.contextmanager
def scraping(metrics_port: int, tmp_path: Path, rule_files: Sequence[Path] = ()) -> Iterator[Prometheus]:
    """A Prometheus scraping an operator's ``127.0.0.1:metrics_port`` (target up on return)."""
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(f) for f in rule_files],
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
    prom_args = [
        tool("prometheus"),
        f"--config.file={config_file}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        "--storage.tsdb.retention.time=1h",
    ]
    prom = Prometheus(f"http://127.0.0.1:{prom_port}", tmp_path / "prometheus.log", tmp_path / "operator.log")
    with process(prom_args, prom.log):
        wait_for("Prometheus to scrape the operator (target up)", prom.target_up, 60, prom.log)
        yield prom


@contextlib.contextmanager
def operator_and_prometheus(
    kube_api: KubeApi, namespace: str, tmp_path: Path, rule_files: Sequence[Path] = ()
) -> Iterator[Prometheus]:
    """``python -m trainop`` watching ``namespace`` and a Prometheus scraping it (target up on return)."""
    metrics_port = free_port()
    env = operator_env(kube_api, namespace, metrics_port)
    with process([sys.executable, "-m", "trainop"], tmp_path / "operator.log", env):
        healthz = f"http://127.0.0.1:{metrics_port}/healthz"
        wait_for(
            "the operator's /healthz", lambda: get_text(healthz) is not None, 60, tmp_path / "operator.log"
        )
        with scraping(metrics_port, tmp_path, rule_files) as prom:
            yield prom
