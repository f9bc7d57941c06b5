"""``python -m tests.support.demo`` (``make demo``): what it applies, and the whole demo as a newcomer runs it --
the sample reaches Succeeded, kubectl works with the printed kubeconfig (``logs`` shows the trainer's epochs), the
plots are real PNGs in S3, the chart's Grafana dashboard evaluates against a real Prometheus scraping the demo's
operator, and Ctrl-C leaves nothing running."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
from typing import Any

import boto3
import pytest
import yaml

from tests.support import demo
from tests.support.grafana import BUILTINS, panel_queries, substitute
from tests.support.procs import stop_process
from tests.support.prometheus import Prometheus, free_port, scraping
from tests.support.waiting import wait_for

ROOT = pathlib.Path(__file__).resolve().parents[2]
SAMPLE = yaml.safe_load((ROOT / "manifests" / "samples" / "sol-run.yaml").read_text())
PNG = b"\x89PNG\r\n\x1a\n"


def test_the_sample_is_applied_as_it_is_without_quick() -> None:
    docs, notes = demo.prepare([SAMPLE], quick=False)
    assert docs == [SAMPLE] and notes == [] and docs[0] is not SAMPLE
    assert demo.checkpoint_prefix(docs[0], "default") == "s3://checkpoints/runs/default/sol-tft"


def test_quick_shrinks_the_run_and_its_own_s3_endpoint_gives_way() -> None:
    run: dict[str, Any] = yaml.safe_load(yaml.safe_dump(SAMPLE))
    run["spec"]["checkpoint"].update(uri="s3://mine/x/", s3Endpoint="http://minio.minio:9000")
    run["spec"]["s3CredentialsSecret"] = {"name": "theirs"}
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    (shrunk, kept), notes = demo.prepare([run, other], quick=True)
    spec = shrunk["spec"]
    assert kept == other and demo.run_names([shrunk, kept]) == ["sol-tft"]
    assert spec["symbols"] == ["SOL"] and spec["training"]["epochs"] == 2 and spec["model"]["hiddenSize"] == 8
    assert spec["training"]["learningRate"] == SAMPLE["spec"]["training"]["learningRate"]  # the rest stays
    assert "s3Endpoint" not in spec["checkpoint"] and "s3CredentialsSecret" not in spec
    assert [n.split(":")[1].split()[0] for n in notes] == ["dropped", "dropped", "--quick"]
    assert demo.checkpoint_prefix(shrunk, "default") == "s3://mine/x"


def leftovers(workdir: pathlib.Path, session: int) -> list[str]:
    """Live processes of the demo's session, or (started in a session of their own) marked with its workdir."""
    marker = f"{demo.MARKER}={workdir}".encode()
    found = []
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state, _, _, sid = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue  # gone meanwhile, or not ours to read
        if state != "Z" and (int(sid) == session or marker in environ):
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.skipif(not pathlib.Path("/proc/self/environ").exists(), reason="reads /proc (Linux)")
def test_demo_quick_succeeds_and_ctrl_c_leaves_nothing_running(tmp_path: pathlib.Path) -> None:
    workdir, out = tmp_path / "demo", tmp_path / "demo.out"
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}  # it must not need one
    env["PYTHONPATH"] = os.pathsep.join((str(ROOT), str(ROOT / "operator")))
    metrics_port = free_port()
    argv = [sys.executable, "-m", "tests.support.demo", "--quick", "--keep", "--workdir", str(workdir)]
    argv += ["--metrics-port", str(metrics_port)]
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:

        def kept() -> bool:
            text = out.read_text(errors="replace")
            assert proc.poll() is None, f"the demo exited with {proc.returncode}:\n{text[-4000:]}"
            return "still running (--keep)" in text

        wait_for("the demo's sample to finish", kept, timeout=240, interval=0.5)
        text = out.read_text()
        assert "]: sol-tft: Succeeded" in text and "all runs Succeeded" in text, text[-3000:]
        assert f"export KUBECONFIG={workdir / 'kubeconfig'}" in text
        check_with_kubectl(workdir)
        check_plots(workdir)
        with scraping(metrics_port, tmp_path) as prom:
            check_dashboard(prom)
        assert leftovers(workdir, proc.pid), "the scan must see the running demo's children"
        os.kill(proc.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        assert proc.wait(90) == 0, out.read_text()[-3000:]
    finally:
        stop_process(proc, 10)
    assert "SIGINT received: stopped everything it started" in out.read_text()
    assert leftovers(workdir, proc.pid) == []


def check_with_kubectl(workdir: pathlib.Path) -> None:
    env = {**os.environ, "KUBECONFIG": str(workdir / "kubeconfig"), "KUBECACHEDIR": str(workdir / "kc")}

    def kubectl(*args: str) -> str:
        return subprocess.run(["kubectl", *args], env=env, capture_output=True, text=True, check=True).stdout

    assert kubectl("get", "tr", "sol-tft", "-o", "jsonpath={.status.phase}") == "Succeeded"
    assert '"event": "epoch", "time"' in kubectl("logs", "job/sol-tft-train")  # the trainer's own lines


def check_plots(workdir: pathlib.Path) -> None:
    """forecast.png and importance.png in the run's checkpoint prefix: PNGs of more than a few KB."""
    settings = dict(line.split("=", 1) for line in (workdir / "s3.env").read_text().splitlines())
    s3 = boto3.client(
        "s3",
        endpoint_url=settings["AWS_ENDPOINT_URL"],
        aws_access_key_id=settings["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=settings["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    for name in demo.ARTEFACTS:
        data = s3.get_object(Bucket=demo.BUCKET, Key=f"{demo.PREFIX}/default/sol-tft/{name}")["Body"].read()
        assert data.startswith(PNG) and len(data) > 8_000, (name, len(data))
        assert (workdir / "artefacts" / "sol-tft" / name).read_bytes() == data  # the copy the demo prints


DASHBOARD = ROOT / "charts" / "crypto-price-predictor" / "dashboards" / "trainingruns.json"
# Panels that must show the demo's finished run (epoch progress is for active runs; failures there are none).
DEMO_PANELS = (
    "Runs by phase",
    "Train and validation loss",
    "Forecast $horizon day(s) ahead: median and 80% band",
    "Published forecasts by horizon",
    "Reconcile latency",
)


def check_dashboard(prom: Prometheus) -> None:
    """Every query of the chart's dashboard evaluates without an error against the demo's operator, and the
    panels of a finished run (its phase, losses, published forecast) and the operator's latency show it."""
    import json

    queries = panel_queries(json.loads(DASHBOARD.read_text()))
    values = {"namespace": "default", "run": ".*", "horizon": "1", **BUILTINS}

    def answered() -> dict[str, Any]:
        answers = {f"{q.panel}/{q.ref}": prom.query(substitute(q.expr, values)) for q in queries}
        errors = {k: a for k, a in answers.items() if a.get("status") != "success"}
        assert errors == {}, errors
        empty = [k for k, a in answers.items() if k.split("/")[0] in DEMO_PANELS and not a["data"]["result"]]
        return answers if not empty else {}

    answers = wait_for("the dashboard's panels to show the demo's run", answered, timeout=60, interval=1)
    # The band of the run's published forecast: one series per day ahead, 0.1 <= 0.5 <= 0.9, finite prices.
    days = {
        ref: {
            s["metric"]["horizon"]: float(s["value"][1])
            for s in answers[f"Published forecasts by horizon/{ref}"]["data"]["result"]
        }
        for ref in "ABC"
    }
    assert set(days["A"]) == set(days["B"]) == set(days["C"]) and len(days["B"]) >= 1, days
    for h in days["B"]:
        assert 0 < days["A"][h] <= days["B"][h] <= days["C"][h] < float("inf"), (h, days)
