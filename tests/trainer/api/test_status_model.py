"""``trainer.api.status``: the one model of a TrainingRun's status -- rounding where values are produced, merge-patch
dumps, lenient parsing of what is stored -- and the operator reading and writing through it."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from trainop import prometheus
from trainop.conditions import last_activity, stall_update
from trainop.status import compose

from trainer.api.status import EpochStats, Metrics, Progress, TrainingRunStatus, significant, whole

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.15380635857582092, 0.1538),
        (1234.5678, 1235.0),
        (98765.4321, 98770.0),
        (-0.000123456, -0.0001235),
        (0.0, 0.0),
        (3.0, 3.0),
        (math.nan, None),
        (math.inf, None),
        (None, None),
    ],
)
def test_significant_digits(value: float | None, expected: float | None) -> None:
    assert significant(value) == expected


def test_whole_numbers() -> None:
    assert (whole(1234.4), whole(1234.6), whole(None), whole(math.nan)) == (1234, 1235, None, None)


def test_progress_of_an_epoch_is_rounded_and_the_eta_goes_when_finished() -> None:
    stats = EpochStats(3, 10, 0.251044123, 0.2492741, 0.99719, 3864.87, 0.2485446, 2, 0.3641)
    p = Progress.of_epoch(stats, finished=False, now=NOW).dump()
    assert p == {
        "epoch": 3,
        "totalEpochs": 10,
        "epochDisplay": "3/10",
        "trainLoss": 0.251,
        "valLoss": 0.2493,
        "valMase": 0.9972,
        "bestValLoss": 0.2485,
        "bestEpoch": 2,
        "samplesPerSecond": 3865,
        "etaSeconds": 2.549,
        "lastProgressTime": "2026-01-02T03:04:05Z",
    }
    done = Progress.of_epoch(stats, finished=True, now=NOW).dump()
    assert "etaSeconds" in done and done["etaSeconds"] is None


def test_dump_carries_only_what_was_set_and_numpy_values_are_plain() -> None:
    np = pytest.importorskip("numpy")
    status = TrainingRunStatus(metrics=Metrics(val_mase=np.float64(0.98765), parameters=np.int64(59823)))
    assert status.patch() == {"status": {"metrics": {"valMase": 0.9877, "parameters": 59823}}}
    assert type(status.patch()["status"]["metrics"]["parameters"]) is int


def condition(type_: str, status: str = "True", **extra: Any) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": "R",
        "message": "m",
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        **extra,
    }


def test_parse_is_lenient_and_drops_only_what_does_not_fit() -> None:
    raw = {
        "phase": "Running",
        "conditions": [condition("Running"), {"type": "Bogus", "status": "True"}, condition("JobCreated")],
        "progress": {"epoch": 4, "valLoss": "not a number", "lastProgressTime": "2026-01-01T00:00:00Z"},
        "restarts": 1,
        "kopf": {"progress": {"x": 1}},
        "somethingNew": {"from": "a later version"},
    }
    status = TrainingRunStatus.parse(raw)
    assert [c.type for c in status.conditions or []] == ["Running", "JobCreated"]
    assert status.progress is not None and status.progress.epoch == 4 and status.progress.val_loss is None
    assert status.phase == "Running" and status.restarts == 1 and status.kopf == {"progress": {"x": 1}}
    assert raw["progress"]["valLoss"] == "not a number", "the caller's dict is not changed"
    for junk in ("hello", None, 42, ["a"], {"progress": "soon", "conditions": "all good"}):
        parsed = TrainingRunStatus.parse(junk)
        assert parsed.progress is None and parsed.conditions is None


def test_reading_the_status_never_needs_torch() -> None:
    code = "import sys, trainer.api.status, trainop.crd; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env={"PYTHONPATH": f"{ROOT / 'operator'}:{ROOT}"},
    )
    assert out.stdout.split() == ["False"]


def test_operator_writes_through_the_model() -> None:
    run = {"metadata": {"generation": 3}, "status": {"conditions": "garbage", "restarts": "many", "phase": 7}}
    change = compose(
        run, [("JobCreated", "True", "JobCreated", "created Job x")], NOW, jobName="x", restarts=0
    )
    assert change.status["phase"] == "Pending" and change.status["observedGeneration"] == 3
    assert [c["type"] for c in change.status["conditions"]] == ["JobCreated"]
    assert change.old_phase is None and change.status["jobName"] == "x"
    again = compose(
        {**run, "status": change.status}, [("JobCreated", "True", "JobCreated", "created Job x")], NOW
    )
    assert again.status == {}, "nothing changed: nothing to write"
    with pytest.raises(TypeError, match="jobname"):
        compose(run, [], NOW, jobname="typo")


def test_operator_reads_through_the_model() -> None:
    body = {"metadata": {"namespace": "ml", "name": "junk"}, "status": "hello"}
    prometheus.observe_run(body, "SOL")  # an unenforced schema: no AttributeError, the gauges say Pending
    text = prometheus.generate_latest(prometheus.REGISTRY).decode()
    assert 'trainingrun_phase{name="junk",namespace="ml",phase="Pending",symbol="SOL"} 1.0' in text
    prometheus.forget_run("ml", "junk")
    running = {"conditions": [condition("Running")], "progress": {"lastProgressTime": "2026-01-02T03:00:00Z"}}
    assert last_activity(running) == datetime(2026, 1, 2, 3, 0, tzinfo=timezone.utc)
    update = stall_update(TrainingRunStatus.parse(running), 60, NOW + timedelta(minutes=5))
    assert update is not None and update[:3] == ("Stalled", "True", "NoProgress")
