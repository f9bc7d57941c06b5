"""The MLflow tracker's promises without a server (``trainer.tracking``, a fake ``Api``): the run is found again by
its key tag, params never change, every update arrives in order, an outage is one warning line and is retried in the
background until the deadline, and neither an epoch nor the end of a run waits long for an unreachable server.
tests/trainer/test_tracking_server.py runs the same code against a real ``mlflow server``."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from trainer.api.errors import Preempted
from trainer.api.status import EpochStats
from trainer.status_report import StatusReporter
from trainer.tracking import Tracker
from trainer.tracking_plan import RUN_KEY_TAG, Plan

PLAN = Plan(
    uri="http://mlflow:5000",
    experiment="exp",
    key="uid:u-1",
    run_name="sol-tft",
    params={"symbol": "SOL", "training.epochs": "3"},
    tags={"checkpoint.uri": "s3://b/runs/sol"},
    deadline_s=600.0,
)
FAST = (0.001, 0.002)  # backoff: the tests do not wait for real seconds


class Refused(Exception):
    """An MLflow REST error with an HTTP status (what ``MlflowException`` offers)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status

    def get_http_status_code(self) -> int:
        return self.status


class FakeApi:
    """An MLflow server in memory; ``down`` calls fail with ConnectionError first, ``refuse`` fails a method once."""

    def __init__(self, down: int = 0, on_call: Callable[[], None] | None = None) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.down = down
        self.refuse: dict[str, Exception] = {}
        self.on_call = on_call

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.on_call is not None:
            self.on_call()
        if self.down:
            self.down -= 1
            raise ConnectionError("connection refused")
        if name in self.refuse:
            raise self.refuse.pop(name)

    def experiment_id(self, name: str) -> str:
        self._call("experiment_id")
        return "7"

    def find_run(self, experiment_id: str, key: str) -> tuple[str, dict[str, str]] | None:
        self._call("find_run")
        found = [(rid, r) for rid, r in self.runs.items() if r["tags"].get(RUN_KEY_TAG) == key]
        return (found[-1][0], dict(found[-1][1]["params"])) if found else None

    def create_run(self, experiment_id: str, name: str, tags: dict[str, str]) -> str:
        self._call("create_run")
        run_id = f"run-{len(self.runs) + 1}"
        self.runs[run_id] = {
            "tags": dict(tags),
            "params": {},
            "metrics": [],
            "files": {},
            "status": "RUNNING",
        }
        return run_id

    def reopen(self, run_id: str) -> None:
        self._call("reopen")
        self.runs[run_id]["status"] = "RUNNING"

    def log(
        self, run_id: str, *, metrics: Any = None, step: int = 0, params: Any = None, tags: Any = None
    ) -> None:
        self._call("log")
        run = self.runs[run_id]
        for k, v in (params or {}).items():
            assert run["params"].get(k, v) == v, f"param {k} changed"  # MLflow refuses that
            run["params"][k] = v
        run["tags"].update(tags or {})
        run["metrics"] += [(k, v, step) for k, v in (metrics or {}).items()]

    def log_files(self, run_id: str, files: dict[str, bytes]) -> None:
        self._call("log_files")
        self.runs[run_id]["files"].update(files)

    def terminate(self, run_id: str, status: str) -> None:
        self._call("terminate")
        self.runs[run_id]["status"] = status


def stats(epoch: int) -> EpochStats:
    return EpochStats(epoch, 3, 0.3, 0.25, 0.99, 1000.0, 0.25, epoch, 0.5)


def tracker_of(api: FakeApi, plan: Plan = PLAN, **kwargs: Any) -> Tracker:
    return Tracker(plan, lambda uri: api, **{"backoff": FAST, **kwargs})


def reporter() -> tuple[StatusReporter, list[dict[str, Any]]]:
    bodies: list[dict[str, Any]] = []
    return StatusReporter(bodies.append, throttle_seconds=0), bodies


def mlflow_records(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "trainer.tracking" and r.levelno == level]


def test_a_run_logs_params_tags_metrics_files_and_its_status() -> None:
    api, (rep, bodies) = FakeApi(), reporter()
    with tracker_of(api) as tracker:
        for e in (1, 2, 3):
            tracker.epoch(stats(e), rep)
        tracker.finish({"valMase": 0.98, "median": "learned"}, {"metrics.json": b"{}"}, epoch=3, reporter=rep)
    [(run_id, run)] = api.runs.items()
    assert run["params"] == PLAN.params
    assert run["tags"] == {**PLAN.tags, RUN_KEY_TAG: "uid:u-1", "median": "learned"}
    assert [s for k, _, s in run["metrics"] if k == "val_mase"] == [1, 2, 3]
    assert {k for k, _, _ in run["metrics"]} == {
        "train_loss",
        "val_loss",
        "val_mase",
        "samples_per_second",
        "valMase",
    }
    assert run["files"] == {"metrics.json": b"{}"} and run["status"] == "FINISHED"
    rep.flush()
    tracking = [b["status"]["tracking"] for b in bodies if "tracking" in b["status"]]
    assert tracking == [{"mlflowRunId": run_id, "experimentId": "7", "uri": "http://mlflow:5000"}]


@pytest.mark.parametrize(
    ("new_run", "runs", "reopened"),
    [(False, 1, True), (True, 2, False)],
    ids=["resume-continues-the-run", "resume-never-starts-a-new-one"],
)
def test_the_run_is_found_again_by_its_key(new_run: bool, runs: int, reopened: bool) -> None:
    api, (rep, _) = FakeApi(), reporter()
    with tracker_of(api) as first:
        first.epoch(stats(1), rep)
    assert api.runs["run-1"]["status"] == "FINISHED"
    more = Plan(**{**PLAN.__dict__, "params": {**PLAN.params, "training.epochs": "5"}, "new_run": new_run})
    with tracker_of(api, more) as second:
        second.epoch(stats(2), rep)
    assert len(api.runs) == runs and ("reopen" in api.calls) == reopened
    run = api.runs[f"run-{runs}"]
    assert [s for k, _, s in run["metrics"] if k == "val_loss"] == ([1, 2] if reopened else [2])
    # A param cannot change in MLflow: the first value stays, the new one is a tag.
    assert run["params"]["training.epochs"] == ("3" if reopened else "5")
    assert ("resumed.training.epochs" in run["tags"]) == reopened


def test_a_preempted_pod_that_never_checkpointed_does_not_make_a_second_run() -> None:
    """The MLflow run was created, the pod was killed before its first checkpoint: the retry finds the run by its
    tag (an id kept in the checkpoint would be lost with it)."""
    api, (rep, _) = FakeApi(), reporter()
    with pytest.raises(Preempted), tracker_of(api):
        raise Preempted("stopped by signal")
    assert api.runs["run-1"]["status"] == "KILLED"
    with tracker_of(api) as retry:
        retry.epoch(stats(1), rep)
    assert list(api.runs) == ["run-1"] and api.runs["run-1"]["status"] == "FINISHED"


def test_an_error_marks_the_run_failed() -> None:
    api = FakeApi()
    with pytest.raises(ValueError), tracker_of(api):
        raise ValueError("nan loss")
    assert api.runs["run-1"]["status"] == "FAILED"


def test_an_outage_is_one_warning_and_every_update_arrives_in_order(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trainer.tracking")
    api, (rep, _) = FakeApi(down=5), reporter()
    with tracker_of(api) as tracker:
        for e in (1, 2, 3):
            tracker.epoch(stats(e), rep)
        deadline = time.monotonic() + 10
        while len(api.calls) < 5 + 5 and time.monotonic() < deadline:  # 5 failures, open (3 calls), 2 epochs
            time.sleep(0.01)
    run = api.runs["run-1"]
    assert [s for k, _, s in run["metrics"] if k == "train_loss"] == [1, 2, 3]
    [warning] = mlflow_records(caplog, logging.WARNING)
    assert "http://mlflow:5000 unreachable" in warning and "training continues" in warning
    assert any("reachable again" in m for m in mlflow_records(caplog, logging.INFO))


def test_it_gives_up_after_the_deadline(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trainer.tracking")
    now = [0.0]

    def later() -> None:
        now[0] += 100.0  # each failed call: 100 s of outage

    api = FakeApi(down=10**9, on_call=later)
    tracker = tracker_of(api, clock=lambda: now[0])
    with tracker:
        assert tracker._thread is not None
        tracker._thread.join(10)  # it stops by itself at the deadline
        assert not tracker._thread.is_alive()
        calls = len(api.calls)
        tracker.epoch(stats(1), reporter()[0])  # dropped: no more calls
    assert len(api.calls) == calls <= 8
    assert len(mlflow_records(caplog, logging.WARNING)) == 1
    assert any("gave up after 600s" in m for m in mlflow_records(caplog, logging.INFO))


def test_a_refusal_drops_that_update_only(caplog: pytest.LogCaptureFixture) -> None:
    api, (rep, _) = FakeApi(), reporter()
    with tracker_of(api) as tracker:
        tracker.epoch(stats(1), rep)
        api.refuse["log_files"] = Refused(400)
        tracker.finish({"valMase": 1.0}, {"forecast.png": b"png"}, epoch=1, reporter=rep)
    run = api.runs["run-1"]
    assert run["files"] == {} and run["status"] == "FINISHED"
    assert ("valMase", 1.0, 1) in run["metrics"]
    [warning] = mlflow_records(caplog, logging.WARNING)
    assert "refused artefacts" in warning


def test_a_refused_run_turns_tracking_off() -> None:
    api = FakeApi()
    api.refuse["experiment_id"] = Refused(403)
    with tracker_of(api) as tracker:
        tracker.epoch(stats(1), reporter()[0])
    assert api.runs == {} and api.calls == ["experiment_id"]


def test_neither_an_epoch_nor_the_end_waits_for_a_hanging_server() -> None:
    release = threading.Event()
    api = FakeApi(on_call=lambda: release.wait(30))
    tracker = tracker_of(api).__enter__()
    try:
        t0 = time.monotonic()
        for e in range(1, 51):
            tracker.epoch(stats(e), reporter()[0])
        assert time.monotonic() - t0 < 0.5  # 50 epochs queued, none sent
        t0 = time.monotonic()
        assert tracker.close(0.3) is False
        assert time.monotonic() - t0 < 2.0
    finally:
        release.set()


def test_the_end_tries_an_unreachable_server_once_more_and_stops() -> None:
    api = FakeApi(down=10**9)
    tracker = tracker_of(api, backoff=(30.0, 30.0))  # the next retry would be 30 s away
    tracker.__enter__()
    tracker.epoch(stats(1), reporter()[0])
    deadline = time.monotonic() + 10
    while not api.calls and time.monotonic() < deadline:
        time.sleep(0.01)
    t0 = time.monotonic()
    tracker.__exit__(None, None, None)
    assert time.monotonic() - t0 < 2.0
    assert api.calls == ["experiment_id", "experiment_id"] and api.runs == {}


def test_without_a_plan_nothing_runs() -> None:
    with Tracker(None) as tracker:
        tracker.epoch(stats(1), reporter()[0])
        assert not tracker.enabled and tracker.close(0.1)
