"""The chart's Grafana dashboard (charts/crypto-price-predictor/dashboards/trainingruns.json).

* its shape: the Grafana dashboard basics a sidecar-provisioned dashboard needs (uid, title, schemaVersion,
  panels with gridPos inside the 24-column grid and not overlapping, every data source a reference to the
  ``${datasource}`` variable, no ``__inputs``), checked with jsonschema against a strict subset (below);
* every query names only metrics ``trainop.prometheus`` really registers (static, fast);
* ``helm template``: ``metrics.grafanaDashboard.enabled`` renders one ConfigMap, labelled for the sidecar, whose
  JSON equals the file; disabled renders none;
* end to end: every panel query and every variable's query, with the variables substituted as Grafana would, is
  evaluated by a real Prometheus scraping a real ``python -m trainop`` whose runs have status written (one
  Failed/InvalidSpec run, one suspended run whose progress the trainer's own ``StatusReporter`` reports): no query
  may answer an error, and the panels in ``CORE_PANELS`` must return series with finite values."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase
from trainop import prometheus as metrics

from tests.support.grafana import (
    BUILTINS,
    DASHBOARD_SCHEMA,
    Query,
    all_panels,
    panel_queries,
    substitute,
    variable_queries,
)
from tests.support.helm_tools import sync, tool
from tests.support.kubeemu.fixtures import KubeApi, kube_api, kube_namespace  # noqa: F401  (pytest fixtures)
from tests.support.prometheus import Prometheus, operator_and_prometheus
from tests.support.waiting import NOT_YET, wait_for
from trainer.status_report import StatusReporter

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "crypto-price-predictor"
DASHBOARD_FILE = CHART / "dashboards" / "trainingruns.json"
DASHBOARD: dict[str, Any] = json.loads(DASHBOARD_FILE.read_text())

# Panels whose every query must return at least one series with a finite value against the fixture below.
CORE_PANELS = [
    "Runs by phase",
    "Stalled runs",
    "Failed runs",
    "Total restarts",
    "Epoch progress (active runs)",
    "Runs needing attention",
    "Train and validation loss",
    "Samples per second",
    "Restarts",
    "Time since last progress",
    "Reconcile latency",
    "Reconcile errors",  # 0/s: every handler's series exists from the operator's start
    "Forecast $horizon day(s) ahead: median and 80% band",  # trainingrun_forecast_price from status.forecast
    "Published forecasts by horizon",
]
# Panels evaluated (no error) that may be empty against the fixture: none now.
PENDING_PANELS: list[str] = []
PENDING_METRICS: set[str] = set()
CORE_VARIABLES = ["namespace", "run", "horizon"]


def test_dashboard_has_grafanas_basics() -> None:
    jsonschema.validate(DASHBOARD, DASHBOARD_SCHEMA)
    panels = list(all_panels(DASHBOARD))
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(set(titles)) == len(titles), "panel titles must be unique (the tests name panels by title)"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24, f"{p['title']} leaves the 24-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
    (ds,) = [v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource"]
    assert (ds["name"], ds["query"]) == ("datasource", "prometheus")
    for p in panels:
        for t in p.get("targets") or []:
            assert t["refId"] in {"A", "B", "C"}, p["title"]


def test_every_panel_is_classified_for_the_e2e_test() -> None:
    titles = {p["title"] for p in all_panels(DASHBOARD) if p["type"] != "row"}
    classified = [*CORE_PANELS, *PENDING_PANELS]
    assert sorted(classified) == sorted(titles)
    # The list: phases, epoch progress, losses, samples/s, restarts, stalled and failed runs, reconcile
    # latency, published forecasts.
    assert {"Runs by phase", "Epoch progress (active runs)", "Train and validation loss"} <= set(CORE_PANELS)
    assert {"Samples per second", "Restarts", "Stalled runs", "Failed runs", "Reconcile latency"} <= set(
        CORE_PANELS
    )


def exported_series() -> set[str]:
    """The series names ``trainop.prometheus`` registers (a histogram's _bucket/_sum/_count, a counter's _total)."""
    suffixes = {"gauge": [""], "counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
    names: set[str] = set()
    for obj in vars(metrics).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                names |= {family.name + s for s in suffixes[family.type]}
    return names


METRIC = re.compile(r"\btrainingrun_\w+")


def test_queries_use_only_exported_metrics() -> None:
    exported = exported_series()
    assert {"trainingrun_phase", "trainingrun_reconcile_duration_seconds_bucket"} <= exported
    for q in panel_queries(DASHBOARD) + variable_queries(DASHBOARD):
        used = set(METRIC.findall(q.expr))
        assert used, f"{q.panel}/{q.ref}: no trainingrun_ metric in {q.expr!r}"
        allowed = exported | (
            PENDING_METRICS if q.panel in PENDING_PANELS or q.panel == "$horizon" else set()
        )
        assert used <= allowed, f"{q.panel}/{q.ref} uses {used - allowed}, which the operator does not export"


def test_substitute() -> None:
    values = {"namespace": "ml", "run": ".*", **BUILTINS}
    expr = 'x{namespace=~"$namespace", name=~"${run}"}[$__rate_interval] [[namespace]] ${run:regex}'
    assert substitute(expr, values) == 'x{namespace=~"ml", name=~".*"}[5m] ml .*'
    with pytest.raises(AssertionError, match="horizon"):
        substitute('x{horizon="$horizon"}', values)


# --- the chart ----------------------------------------------------------------------------------------------


def configmaps(*set_args: str) -> list[dict[str, Any]]:
    tool("helm")
    docs = sync.split_docs(sync.helm_template(*set_args))
    return [d for d in docs if d["kind"] == "ConfigMap"]


def test_chart_renders_the_dashboard_configmap() -> None:
    (cm,) = configmaps("--set", "metrics.grafanaDashboard.enabled=true")
    assert cm["metadata"]["name"] == "cpp-crypto-price-predictor-dashboard"
    assert cm["metadata"]["namespace"] == "ml"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["labels"]["app.kubernetes.io/instance"] == "cpp"
    assert "annotations" not in cm["metadata"]
    assert list(cm["data"]) == ["trainingruns.json"]
    assert json.loads(cm["data"]["trainingruns.json"]) == DASHBOARD
    assert len(cm["data"]["trainingruns.json"]) < 256 * 1024  # under kubectl apply's annotation limit too


def test_chart_dashboard_label_namespace_and_annotations_are_values() -> None:
    (cm,) = configmaps(
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.labelKey=example.com/dashboard",
        "--set-string",
        "metrics.grafanaDashboard.labelValue=true",
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
        "--set",
        "metrics.grafanaDashboard.annotations.grafana_folder=ML",
    )
    labels = cm["metadata"]["labels"]
    assert labels["example.com/dashboard"] == "true" and "grafana_dashboard" not in labels
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "ML"}


def test_chart_renders_no_dashboard_by_default() -> None:
    assert configmaps() == []
    assert configmaps("--set", "metrics.grafanaDashboard.enabled=false") == []


def test_dashboard_values_are_checked_by_the_schema() -> None:
    tool("helm")
    res = sync.helm(
        "template", "cpp", str(CHART), "--set", "metrics.grafanaDashboard.labelKey=bad key", check=False
    )
    assert res.returncode != 0 and "metrics.grafanaDashboard.labelKey" in res.stderr, res.stderr


# --- end to end: every query against a real Prometheus scraping the real operator ---------------------------

FAILING_RUN = """
apiVersion: cryptopredictor.dev/v1alpha1
kind: TrainingRun
metadata:
  name: sol-badbucket
spec:
  symbol: SOL
  training: {epochs: 2, device: cpu}
  checkpoint:
    uri: s3://Bad_Bucket/runs    # the CRD admits any string; the spec model refuses this bucket name
"""
# Suspended: the operator creates its Job suspended, so nothing runs on any cluster; the trainer's progress is
# reported by the trainer's own StatusReporter below.
PROGRESS_RUN = """
apiVersion: cryptopredictor.dev/v1alpha1
kind: TrainingRun
metadata:
  name: sol-progress
spec:
  symbol: SOL
  suspend: true
  model: {hiddenSize: 8}
  training: {epochs: 3, device: cpu}
"""
# status.forecast as the trainer writes it (trainer.publish; trainer.api.status.ForecastStatus).
FORECAST_DAYS = [
    {"date": "2026-01-02", "values": [110.0, 121.0, 131.0]},
    {"date": "2026-01-03", "values": [105.0, 122.0, 138.0]},
]
FORECAST = {
    "symbol": "SOL",
    "origin": "2026-01-01",
    "originClose": 120.5,
    "generatedAt": "2026-01-01T00:10:00Z",
    "uri": "s3://models/runs/sol-progress/forecast.json",
    "quantiles": [0.1, 0.5, 0.9],
    "days": FORECAST_DAYS,
}


def finite_series(answer: dict[str, Any]) -> bool:
    data = answer.get("data") or {}
    if data.get("resultType") == "scalar":
        return math.isfinite(float(data["result"][1]))
    return any(math.isfinite(float(s["value"][1])) for s in data.get("result") or [])


def write_status(kube_api: KubeApi, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv("KUBECONFIG", str(kube_api.kubeconfig))
    reporter = StatusReporter.from_env(
        {"TRAININGRUN_NAME": "sol-progress", "TRAININGRUN_NAMESPACE": namespace}
    )
    assert reporter.enabled
    reporter.progress(
        epoch=1,
        total_epochs=3,
        train_loss=0.71,
        val_loss=0.52,
        val_mase=0.93,
        best_val_loss=0.52,
        best_epoch=1,
        samples_per_second=1500.0,
        eta_seconds=20.0,
    )
    reporter.close()
    assert reporter.sent >= 1 and reporter.failed == 0
    patch = json.dumps({"status": {"forecast": FORECAST}})
    kube_api.kubectl(
        "patch",
        "trainingrun",
        "sol-progress",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        patch,
    )


def evaluate(prom: Prometheus, values: dict[str, str]) -> dict[Query, dict[str, Any]]:
    queries = panel_queries(DASHBOARD) + variable_queries(DASHBOARD)
    return {q: prom.query(substitute(q.expr, values)) for q in queries}


class CoreEmpty(Exception):
    """Some core query has no finite series yet (the panels, refIds and answers)."""


def core_missing(answers: dict[Query, dict[str, Any]]) -> list[Query]:
    core = {*CORE_PANELS, *(f"${v}" for v in CORE_VARIABLES)}
    return [q for q, a in answers.items() if q.panel in core and not finite_series(a)]


def start_runs(kube_api: KubeApi, namespace: str, tmp_path: Path, log: Path) -> None:  # noqa: F811
    """The two runs, once the operator has given each its phase; then the trainer's progress and a forecast."""
    for name, manifest in (("sol-badbucket", FAILING_RUN), ("sol-progress", PROGRESS_RUN)):
        run_file = tmp_path / f"{name}.yaml"
        run_file.write_text(manifest)
        kube_api.kubectl("apply", "-n", namespace, "-f", str(run_file))

    def phase(name: str) -> str | None:
        out = kube_api.kubectl("get", "trainingrun", name, "-n", namespace, "-o", "json")
        return (yaml.safe_load(out.stdout).get("status") or {}).get("phase")

    wait_for("sol-badbucket to be Failed", lambda: phase("sol-badbucket") == "Failed", 60, log)
    wait_for("sol-progress to be Suspended", lambda: phase("sol-progress") == "Suspended", 60, log)


def answers_when_ready(prom: Prometheus, values: dict[str, str]) -> dict[Query, dict[str, Any]]:
    """Every query's answer, once each core one has a finite series (at once if any answers an error)."""

    def probe() -> dict[Query, dict[str, Any]]:
        answers = evaluate(prom, values)
        if any(a.get("status") != "success" for a in answers.values()):
            return answers  # an error does not go away by waiting: fail now
        if missing := core_missing(answers):
            raise CoreEmpty([(q.panel, q.ref, answers[q]) for q in missing])
        return answers

    return wait_for(
        "every core panel's query to return a finite series",
        probe,
        60,
        prom.operator_log,
        interval=1,
        retry_on=(*NOT_YET, CoreEmpty),
    )


@pytest.mark.slow
@pytest.mark.e2e
def test_every_query_evaluates_against_the_operators_metrics(
    kube_api: KubeApi,  # noqa: F811
    kube_namespace: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kube_api.kubectl("apply", "-f", str(CHART / "crds" / "trainingruns.yaml"))
    # The namespace as picked in its dropdown, every run ("All"), the first forecast day.
    values = {"namespace": kube_namespace, "run": ".*", "horizon": "1", **BUILTINS}
    with operator_and_prometheus(kube_api, kube_namespace, tmp_path) as prom:
        start_runs(kube_api, kube_namespace, tmp_path, prom.operator_log)
        write_status(kube_api, kube_namespace, monkeypatch)
        answers = answers_when_ready(prom, values)
        errors = {f"{q.panel}/{q.ref}": a for q, a in answers.items() if a.get("status") != "success"}
        assert errors == {}
        expected = {
            "namespace": [kube_namespace],
            "run": ["sol-badbucket", "sol-progress"],
            "horizon": [str(h) for h in range(1, len(FORECAST_DAYS) + 1)],
        }
        for var in CORE_VARIABLES:
            (q,) = [q for q in answers if q.panel == f"${var}"]
            got = prom.label_values(q.ref, substitute(q.expr, values))
            assert got == expected[var], f"${var}: label_values gave {got}"
    # The panels show what the runs' status says.
    (progress,) = [a for q, a in answers.items() if q.panel == "Epoch progress (active runs)"]
    (row,) = progress["data"]["result"]
    assert row["metric"]["name"] == "sol-progress" and float(row["value"][1]) == pytest.approx(1 / 3)
    (phases,) = [a for q, a in answers.items() if q.panel == "Runs by phase"]
    by_phase = {s["metric"]["phase"]: float(s["value"][1]) for s in phases["data"]["result"]}
    assert by_phase == {"Pending": 0, "Running": 0, "Succeeded": 0, "Failed": 1, "Suspended": 1}
