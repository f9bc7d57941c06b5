"""Resume: a killed or preempted run, restarted with the same command, ends with the same weights, bit for bit,
as a run that was never interrupted (CPU, same seed). Local directory here; tests/trainer/test_resume_s3.py does the same
against the real S3 server."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.trainer_helpers import (
    SAMPLE,
    TINY,
    assert_same_weights,
    events,
    final_weights,
    popen_trainer,
    run_trainer,
)
from trainer.api import exitcodes

pytestmark = pytest.mark.slow

EPOCHS = "4"
# Small batches make an epoch long enough (~1-2 s) that a signal lands inside one.
ARGS = [*TINY, "--epochs", EPOCHS, "--set", "training.batchSize=16", "--json"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = run_trainer("run", SAMPLE, "--output", str(out), *ARGS)
    assert proc.returncode == 0, proc.stderr
    return out


def start(out: Path) -> subprocess.Popen[str]:
    return popen_trainer("run", SAMPLE, "--output", str(out), *ARGS)


def wait_for_epoch(proc: subprocess.Popen[str], epoch: int, timeout: float = 120) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if (
            line.startswith("{")
            and json.loads(line).get("event") == "epoch"
            and json.loads(line)["epoch"] == epoch
        ):
            return lines
    text = "".join(lines)
    raise AssertionError(f"trainer never reached epoch {epoch}:\n{text}")


def test_kill_9_then_resume_is_bit_exact(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(out)
    wait_for_epoch(proc, 2)
    time.sleep(0.3)  # somewhere inside epoch 3
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    latest = json.loads((out / "latest.json").read_text())
    assert 1 <= latest["epoch"] <= 3
    again = run_trainer("run", SAMPLE, "--output", str(out), *ARGS)
    assert again.returncode == 0, again.stderr
    [resume] = [e for e in events(again.stderr) if e["event"] == "resume"]
    assert resume["epoch"] == latest["epoch"]
    assert f"epoch-{latest['epoch']:06d}.pt" in resume["uri"]
    epochs = [e["epoch"] for e in events(again.stderr) if e["event"] == "epoch"]
    assert epochs == list(range(latest["epoch"] + 1, int(EPOCHS) + 1))  # continues at the next epoch
    assert_same_weights(final_weights(out / "last.pt"), final_weights(reference / "last.pt"))


def test_sigterm_checkpoints_mid_epoch_and_resumes_bit_exact(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start(out)
    wait_for_epoch(proc, 1)
    time.sleep(0.2)
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == exitcodes.PREEMPTED, rest
    assert time.monotonic() - t0 < 25  # within the grace period
    [pre] = [e for e in events(rest) if e["event"] == "preempted"]
    assert Path(pre["uri"]).is_file()
    again = run_trainer("run", SAMPLE, "--output", str(out), *ARGS)
    assert again.returncode == 0, again.stderr
    assert_same_weights(final_weights(out / "last.pt"), final_weights(reference / "last.pt"))


def test_sigterm_after_the_last_epoch_stores_it_and_resumes_bit_exact(
    reference: Path, tmp_path: Path
) -> None:
    """A signal after the last epoch line (during evaluation, when no step is left to finish) still waits for
    that epoch's upload within the grace period and exits 143; the restart only evaluates."""
    out = tmp_path / "run"
    proc = start(out)
    wait_for_epoch(proc, int(EPOCHS))
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == exitcodes.PREEMPTED, rest
    [pre] = [e for e in events(rest) if e["event"] == "preempted"]
    assert pre["uri"].endswith(f"checkpoints/epoch-{int(EPOCHS):06d}.pt") and Path(pre["uri"]).is_file()
    assert json.loads((out / "latest.json").read_text())["epoch"] == int(EPOCHS)
    again = run_trainer("run", SAMPLE, "--output", str(out), *ARGS)
    assert again.returncode == 0, again.stderr
    assert not [e for e in events(again.stderr) if e["event"] == "epoch"]
    assert_same_weights(final_weights(out / "last.pt"), final_weights(reference / "last.pt"))


def test_resume_never_starts_fresh_and_extending_epochs_continues(reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = run_trainer("run", SAMPLE, "--output", str(out), *TINY, "--epochs", "2", "--json")
    assert first.returncode == 0, first.stderr
    more = run_trainer("run", SAMPLE, "--output", str(out), *TINY, "--epochs", "3", "--json")
    assert more.returncode == 0, more.stderr
    assert [e["epoch"] for e in events(more.stderr) if e["event"] == "epoch"] == [3]
    fresh = run_trainer(
        "run", SAMPLE, "--output", str(out), *TINY, "--epochs", "1", "--resume", "never", "--json"
    )
    assert fresh.returncode == 0, fresh.stderr
    assert not [e for e in events(fresh.stderr) if e["event"] == "resume"]


def test_architecture_change_is_refused(reference: Path) -> None:
    proc = run_trainer(
        "run",
        SAMPLE,
        "--output",
        str(reference),
        *ARGS,
        "--set",
        "model.hiddenSize=16",
        "--set",
        "model.attentionHeads=2",
    )
    assert proc.returncode == exitcodes.INVALID_CONFIG
    assert "architecture differs" in proc.stderr and "hiddenSize: checkpoint 8, spec 16" in proc.stderr
    assert "Traceback" not in proc.stderr
