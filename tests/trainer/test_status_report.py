"""The trainer's StatusReporter: throttling with a fake clock, merging, final flush, failures never raise; what
it sends is the status model's (rounded where produced, the ETA gone once finished)."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from typing import Any

import pytest

from trainer.api.status import EpochStats
from trainer.status_report import BackgroundSender, StatusReporter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(
    throttle: float = 10.0, fail: bool = False
) -> tuple[StatusReporter, list[dict[str, Any]], FakeClock]:
    sent: list[dict[str, Any]] = []
    clock = FakeClock()

    def patch(body: dict[str, Any]) -> None:
        if fail:
            raise RuntimeError("503 Service Unavailable; Authorization: Bearer s3cr3t-token")
        sent.append(body)

    wall = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    reporter = StatusReporter(
        patch, throttle_seconds=throttle, clock=clock, wall_clock=lambda: wall, target="ml/sol-tft"
    )
    return reporter, sent, clock


def progress(reporter: StatusReporter, epoch: int, val: float = 0.5) -> None:
    reporter.progress(
        epoch=epoch,
        total_epochs=100,
        train_loss=0.6,
        val_loss=val,
        val_mase=0.9,
        best_val_loss=val,
        best_epoch=epoch,
        samples_per_second=1234.5,
        eta_seconds=60.0,
    )


def test_first_update_is_sent_then_throttled() -> None:
    reporter, sent, clock = make()
    progress(reporter, 1)
    assert len(sent) == 1
    assert sent[0] == {
        "status": {
            "progress": {
                "epoch": 1,
                "totalEpochs": 100,
                "epochDisplay": "1/100",
                "trainLoss": 0.6,
                "valLoss": 0.5,
                "valMase": 0.9,
                "bestValLoss": 0.5,
                "bestEpoch": 1,
                "samplesPerSecond": 1234,  # an integer: rounded where it is produced
                "etaSeconds": 60.0,
                "lastProgressTime": "2026-01-02T03:04:05Z",
            }
        }
    }
    for epoch in range(2, 20):
        clock.now += 0.5
        progress(reporter, epoch)
    assert len(sent) == 1, "updates within the throttle window must not be sent"
    clock.now += 10
    progress(reporter, 20)
    assert len(sent) == 2 and sent[1]["status"]["progress"]["epoch"] == 20


def test_at_most_one_patch_per_window_over_a_long_run() -> None:
    reporter, sent, clock = make(throttle=10)
    for epoch in range(600):  # 600 epochs, 0.25 s each: 150 s
        progress(reporter, epoch)
        clock.now += 0.25
    assert 15 <= len(sent) <= 16


def test_pending_updates_are_merged_and_flushed_at_final() -> None:
    reporter, sent, clock = make()
    progress(reporter, 1)
    clock.now += 1
    reporter.checkpoint(latest="s3://b/ckpt/epoch-2.pt", best="s3://b/ckpt/best.pt", epoch=2)
    progress(reporter, 2, val=0.4)
    assert len(sent) == 1
    reporter.final({"val_mase": 0.87, "coverage80": 0.79, "bestEpoch": 2})
    assert len(sent) == 2
    status = sent[1]["status"]
    assert status["progress"]["epoch"] == 2 and status["progress"]["valLoss"] == 0.4
    assert status["checkpoint"] == {
        "latest": "s3://b/ckpt/epoch-2.pt",
        "best": "s3://b/ckpt/best.pt",
        "epoch": 2,
    }
    assert status["metrics"] == {"valMase": 0.87, "coverage80": 0.79, "bestEpoch": 2}
    reporter.close()
    assert len(sent) == 2, "nothing pending: close sends nothing"


def test_close_sends_the_last_pending_update() -> None:
    reporter, sent, clock = make()
    progress(reporter, 1)
    clock.now += 2
    progress(reporter, 2)
    reporter.close()
    assert [b["status"]["progress"]["epoch"] for b in sent] == [1, 2]


def test_non_finite_values_become_null() -> None:
    reporter, sent, _ = make()
    reporter.progress(epoch=3, total_epochs=10, train_loss=float("nan"), val_loss=float("inf"))
    assert sent[0]["status"]["progress"]["trainLoss"] is None
    assert sent[0]["status"]["progress"]["valLoss"] is None


def test_failure_never_raises_logs_one_line_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    reporter, _, clock = make(fail=True)
    with caplog.at_level(logging.WARNING, logger="trainer.status_report"):
        progress(reporter, 1)
        clock.now += 11
        progress(reporter, 2)
        reporter.final({"valMase": 1.0})
        reporter.close()
    assert reporter.failed == 4 and reporter.sent == 0  # close retries what final could not send
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert all("\n" not in line and "s3cr3t-token" not in line for line in lines), lines
    assert "ml/sol-tft" in lines[0]


def test_from_env_without_name_is_a_no_op() -> None:
    reporter = StatusReporter.from_env({})
    assert not reporter.enabled
    progress(reporter, 1)
    reporter.final({"valMase": 1.0})
    reporter.close()


def test_from_env_without_cluster_config_is_a_no_op(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    reporter = StatusReporter.from_env({"TRAININGRUN_NAME": "x", "TRAININGRUN_NAMESPACE": "ml"})
    assert not reporter.enabled
    progress(reporter, 1)


def test_importing_the_reporter_does_not_import_torch_or_kubernetes() -> None:
    code = "import sys, trainer.status_report; print('torch' in sys.modules, 'kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_checkpoint_alone_waits_for_the_next_progress() -> None:
    reporter, sent, _ = make()
    reporter.checkpoint(latest="s3://b/e1.pt", best="s3://b/best.pt", epoch=1)
    assert sent == []
    progress(reporter, 1)
    assert len(sent) == 1 and sent[0]["status"]["checkpoint"]["epoch"] == 1


def test_background_sender_never_blocks_and_merges() -> None:
    release = threading.Event()
    bodies: list[dict[str, Any]] = []

    def slow_patch(body: dict[str, Any]) -> None:
        release.wait(5)
        bodies.append(body)

    sender = BackgroundSender(slow_patch, "ml/x")
    reporter = StatusReporter(sender, throttle_seconds=0)
    start = time.perf_counter()
    for epoch in range(1, 6):
        progress(reporter, epoch)
    assert time.perf_counter() - start < 0.5, "the training loop must not wait for the API server"
    release.set()
    reporter.close(timeout=5)
    assert bodies[-1]["status"]["progress"]["epoch"] == 5
    assert 1 <= len(bodies) <= 5 and reporter.sent == len(bodies) and reporter.failed == 0


def test_background_sender_retries_a_failed_body_at_close(caplog: pytest.LogCaptureFixture) -> None:
    calls: list[dict[str, Any]] = []

    def flaky(body: dict[str, Any]) -> None:
        calls.append(body)
        if len(calls) == 1:
            raise ConnectionError("connection refused")

    sender = BackgroundSender(flaky, "ml/x")
    sender({"status": {"progress": {"epoch": 1}}})
    for _ in range(100):
        if sender.failed:
            break
        time.sleep(0.01)
    with caplog.at_level(logging.WARNING, logger="trainer.status_report"):
        assert sender.drain(5)
    assert sender.failed == 1 and sender.sent == 1
    assert calls[-1] == {"status": {"progress": {"epoch": 1}}}


def test_drain_times_out_on_a_hung_api() -> None:
    hang = threading.Event()

    def hung(body: dict[str, Any]) -> None:
        hang.wait(5)

    sender = BackgroundSender(hung, "ml/x")
    sender({"status": {"metrics": {"valMase": 1.0}}})
    start = time.perf_counter()
    assert sender.drain(0.2) is False
    assert time.perf_counter() - start < 1.0
    hang.set()


def stats(epoch: int, total: int = 10, seconds: float = 3.6172834) -> EpochStats:
    return EpochStats(
        epoch=epoch,
        total_epochs=total,
        train_loss=0.15380635857582092,
        val_loss=0.2000049,
        val_mase=0.98765432,
        samples_per_second=15234.56,
        best_val_loss=0.19999999,
        best_epoch=epoch,
        seconds=seconds,
    )


def test_epoch_values_are_rounded_where_produced() -> None:
    reporter, sent, _ = make()
    reporter.epoch(stats(3), finished=False)
    p = sent[0]["status"]["progress"]
    assert (p["trainLoss"], p["valLoss"], p["valMase"], p["bestValLoss"]) == (0.1538, 0.2, 0.9877, 0.2)
    assert p["samplesPerSecond"] == 15235 and isinstance(p["samplesPerSecond"], int)
    assert p["etaSeconds"] == 25.32  # 7 epochs left of 3.617 s
    assert p["epochDisplay"] == "3/10" and p["lastProgressTime"] == "2026-01-02T03:04:05Z"


def test_eta_disappears_once_the_run_finishes() -> None:
    reporter, sent, clock = make(throttle=0)
    reporter.epoch(stats(9), finished=False)
    clock.now += 1
    reporter.epoch(stats(10), finished=True)  # also an early stop: ``finished`` is the trainer's ``done``
    assert sent[0]["status"]["progress"]["etaSeconds"] == 3.617
    last = sent[1]["status"]["progress"]
    assert "etaSeconds" in last and last["etaSeconds"] is None, "null deletes the field in a merge patch"


def test_final_metrics_go_through_the_model() -> None:
    reporter, sent, _ = make()
    reporter.final(
        {
            "valMae": 1.234567,
            "valMase": 0.9512345,
            "coverage80": 0.8,
            "pinball": 0.123456,
            "empiricalPinball": 0.2,
            "ewmaPinball": 0.3,
            "garchPinball": 0.45678,
            "skillVsGarch": 0.0123456,
            "median": "persistence",
            "band": "prior",
            "bestEpoch": 4,
            "wallSeconds": 31.4159,
            "parameters": 59823,
        }
    )
    m = sent[0]["status"]["metrics"]
    assert m["valMae"] == 1.235 and m["valMase"] == 0.9512 and m["skillVsGarch"] == 0.01235
    assert m["median"] == "persistence" and m["band"] == "prior" and m["wallSeconds"] == 31.42
    assert m["parameters"] == 59823 and m["bestEpoch"] == 4


def test_with_block_sends_the_last_update_however_the_run_ends() -> None:
    reporter, sent, clock = make()
    with pytest.raises(KeyboardInterrupt), reporter:
        progress(reporter, 1)
        clock.now += 1
        progress(reporter, 2)  # throttled: pending
        raise KeyboardInterrupt  # a signal, a NaN loss...
    assert [b["status"]["progress"]["epoch"] for b in sent] == [1, 2]
