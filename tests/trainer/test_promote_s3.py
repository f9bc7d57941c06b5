"""Two runs of a schedule on the real S3 server (in this process, status captured): the first publishes its
forecast and is promoted (no current model), the second is scored against the first *on its own validation
windows* and, short of the margin, is not; current.json stays the first's and ``predict --checkpoint
s3://.../current`` serves the first's model."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.s3server import S3Server
from tests.support.trainer_helpers import SAMPLE
from trainer.api.manifest import load_manifest, parse_spec
from trainer.status_report import StatusReporter

pytestmark = pytest.mark.slow
TINY = {"symbols": None, "model": {"hiddenSize": 8, "attentionHeads": 2}}


def _run(s3: S3Server, output: str, monkeypatch: pytest.MonkeyPatch, **changes: Any) -> dict[str, Any]:
    """A tiny run of the sample with ``changes``; its status patches merged into one status."""
    from trainer.run import RunOptions, run_training

    _, sample = load_manifest(SAMPLE)
    doc = sample.model_dump(by_alias=True, mode="json")
    for section, values in {**TINY, **changes}.items():
        doc[section] = {**(doc[section] or {}), **values} if isinstance(values, dict) else values
    sent: list[dict[str, Any]] = []
    reporter = StatusReporter(sent.append, throttle_seconds=0)
    monkeypatch.setattr(StatusReporter, "from_env", classmethod(lambda cls, environ=None: reporter))
    opts = RunOptions(
        name=output.rsplit("/", 1)[1], output=output, s3_endpoint=s3.endpoint, interactive=False
    )
    run_training(parse_spec(doc), opts)
    status: dict[str, Any] = {}
    for body in sent:
        status.update(body["status"])
    return status


def _get(s3: S3Server, bucket: str, key: str) -> dict[str, Any]:
    return dict(json.loads(s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()))


def test_promote_then_keep_the_current_model(
    s3_env: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.cli import main
    from trainer.evaluate import backtest, load_model

    monkeypatch.setenv("TRAININGRUN_NAMESPACE", "ml")
    bucket = s3_env.create_bucket()
    data = {"start": "2023-01-01", "inputWindow": 20}
    first = _run(
        s3_env, f"s3://{bucket}/sched/r1", monkeypatch, data=data, training={"epochs": 2}, promotion={}
    )
    fc, promo = first["forecast"], first["promotion"]
    assert (fc["symbol"], fc["origin"], fc["uri"]) == (
        "SOL",
        "2025-06-30",
        f"s3://{bucket}/sched/r1/forecast.json",
    )
    published = _get(s3_env, bucket, "sched/r1/forecast.json")
    assert published["model"] == f"s3://{bucket}/sched/r1/best.pt" and published["run"] == "r1"
    assert [d["values"][1] for d in fc["days"]] == [float(f"{d['q0.5']:.6g}") for d in published["days"]]
    assert promo["promoted"] is True and promo["incumbent"] is None and promo["metric"] == "pinball"
    assert promo["currentUri"] == f"s3://{bucket}/sched/current.json"
    assert promo["value"] == pytest.approx(first["metrics"]["pinball"], rel=1e-3)
    current = _get(s3_env, bucket, "sched/current.json")
    best = _get(s3_env, bucket, "sched/r1/best.json")
    assert (current["model"], current["sha256"]) == (f"s3://{bucket}/sched/r1/best.pt", best["sha256"])
    assert (current["run"], current["namespace"], current["metric"]) == ("r1", "ml", "pinball")

    # The next tick: a month less data (other validation windows), a 50% margin it cannot meet.
    second = _run(
        s3_env,
        f"s3://{bucket}/sched/r2",
        monkeypatch,
        data={**data, "end": "2025-05-31"},
        training={"epochs": 1, "seed": 7},
        promotion={"minImprovement": 0.5},
    )
    assert (
        second["forecast"]["origin"] == "2025-05-31" and second["forecast"]["days"][0]["date"] == "2025-06-01"
    )
    promo = second["promotion"]
    assert promo["promoted"] is False and promo["modelUri"] == f"s3://{bucket}/sched/r2/best.pt"
    assert promo["message"].startswith("not promoted: pinball ")
    assert "the current model (r1) scored on this run's validation windows" in promo["message"]
    # The incumbent's figure is r1's model on r2's validation period, not r1's own recorded figure.
    window = _get(s3_env, bucket, "sched/r2/metrics.json")["validation"]
    rescored = backtest(load_model(f"s3://{bucket}/sched/r1"), None, start=window["start"], end=window["end"])
    assert promo["incumbent"] == pytest.approx(rescored["pinball"], rel=1e-5)
    assert promo["incumbent"] != pytest.approx(current["value"], rel=1e-5)
    assert _get(s3_env, bucket, "sched/current.json") == current  # unchanged

    assert main(["predict", "--checkpoint", f"s3://{bucket}/sched/current", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["forecast"]
    assert [r["q0.9"] for r in rows] == pytest.approx([d["q0.9"] for d in published["days"]], rel=1e-6)
