"""Faults against the real S3 server (SeaweedFS on 127.0.0.1, checking credentials), through the real CLI:
kill -9 mid-epoch and resume bit for bit, a storage outage mid-run, a corrupted newest checkpoint, a wrong
secret, and data read from S3."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.s3server import S3Server
from tests.support.trainer_helpers import (
    ROOT,
    SAMPLE,
    TINY,
    assert_same_weights,
    events,
    popen_trainer,
    run_trainer,
    trainer_cmd,
    trainer_env,
)
from trainer.api import exitcodes

pytestmark = pytest.mark.slow
ARGS = [*TINY, "--epochs", "4", "--set", "training.batchSize=16", "--json"]


def s3_weights(s3: S3Server, bucket: str, key: str) -> dict[str, object]:
    import io

    import torch

    body = s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()
    return dict(torch.load(io.BytesIO(body), weights_only=True)["model"])


def latest(s3: S3Server, bucket: str, prefix: str) -> dict[str, object]:
    body = s3.client().get_object(Bucket=bucket, Key=f"{prefix}/latest.json")["Body"].read()
    return dict(json.loads(body))


def test_kill_9_mid_epoch_resumes_bit_exact_from_s3(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    ref = run_trainer("run", SAMPLE, "--output", str(tmp_path / "ref"), *ARGS)
    assert ref.returncode == 0, ref.stderr
    uri = f"s3://{bucket}/sol-tft"
    cmd = trainer_cmd("run", SAMPLE, "--output", uri, "--s3-endpoint", s3_server.endpoint, *ARGS)
    proc = popen_trainer(*cmd[3:], env=s3_server.env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if (
            line.startswith("{")
            and json.loads(line).get("epoch") == 2
            and json.loads(line)["event"] == "epoch"
        ):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = latest(s3_server, bucket, "sol-tft")
    again = subprocess.run(
        cmd, cwd=ROOT, text=True, capture_output=True, env=trainer_env(s3_server.env), timeout=300
    )
    assert again.returncode == 0, again.stderr
    [resume] = [e for e in events(again.stderr) if e["event"] == "resume"]
    assert resume["uri"] == f"{uri}/checkpoints/epoch-{before['epoch']:06d}.pt"
    assert f"resuming from {resume['uri']} (epoch {before['epoch']}/4)" in resume["message"]
    assert_same_weights(
        s3_weights(s3_server, bucket, "sol-tft/last.pt"),  # type: ignore[arg-type]
        dict(__import__("torch").load(tmp_path / "ref" / "last.pt", weights_only=True)["model"]),
    )
    keys = {
        o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket, Prefix="sol-tft/")["Contents"]
    }
    for name in ("best.pt", "latest.json", "metrics.json", "config.json", "forecast.png", "last.pt"):
        assert f"sol-tft/{name}" in keys
    assert len([k for k in keys if k.endswith(".pt") and "/checkpoints/" in k]) == 3  # keepLast


def test_sigterm_just_after_an_epoch_line_keeps_that_epoch_on_s3(s3_server: S3Server) -> None:
    """The epoch line comes while that epoch's upload is still in flight (tens of ms); a SIGTERM then waits for
    it within the grace period, so the restart resumes from that epoch."""
    bucket = s3_server.create_bucket()
    uri = f"s3://{bucket}/term"
    cmd = trainer_cmd("run", SAMPLE, "--output", uri, "--s3-endpoint", s3_server.endpoint, *ARGS)
    proc = popen_trainer(*cmd[3:], env=s3_server.env)
    assert proc.stdout is not None
    for line in proc.stdout:
        if (
            line.startswith("{")
            and json.loads(line).get("event") == "epoch"
            and json.loads(line)["epoch"] == 2
        ):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == exitcodes.PREEMPTED, rest
    [pre] = [e for e in events(rest) if e["event"] == "preempted"]
    assert pre["uri"] == f"{uri}/checkpoints/epoch-000002.pt"
    assert latest(s3_server, bucket, "term")["epoch"] == 2
    again = subprocess.run(
        cmd, cwd=ROOT, text=True, capture_output=True, env=trainer_env(s3_server.env), timeout=300
    )
    assert again.returncode == 0, again.stderr
    [resume] = [e for e in events(again.stderr) if e["event"] == "resume"]
    assert resume["uri"] == pre["uri"] and resume["epoch"] == 2


def test_storage_outage_mid_run_does_not_stop_training(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    cmd = trainer_cmd(
        "run", SAMPLE, "--output", f"s3://{bucket}/outage", "--s3-endpoint", s3_server.endpoint, *ARGS
    )
    proc = popen_trainer(*cmd[3:], env=s3_server.env)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("{") and json.loads(line).get("event") == "epoch":
            break
    s3_server.stop()
    try:
        time.sleep(3)  # the trainer keeps training while storage is down
    finally:
        s3_server.start()
    rest, _ = proc.communicate(timeout=300)
    out = "".join(lines) + rest
    assert proc.returncode == 0, out
    assert latest(s3_server, bucket, "outage")["epoch"] == 4
    # The uploader's lines are JSON like the progress: a warning per failed attempt, one line on recovery.
    assert all(line.startswith("{") for line in out.splitlines() if "checkpoint upload" in line), out
    logged = [e for e in events(out) if e["event"] in ("warning", "info")]
    assert any("checkpoint upload failed" in e["message"] for e in logged), out
    assert len([e for e in logged if "recovered after" in e["message"]]) == 1, out
    # botocore's retry jitter drew from the global ``random`` during the outage; the saved Python RNG state is
    # the trainer's own, so it is still the seeded one ("every RNG restored" holds after an outage too).
    import io
    import random

    import torch

    body = s3_server.client().get_object(Bucket=bucket, Key="outage/last.pt")["Body"].read()
    saved = torch.load(io.BytesIO(body), weights_only=True)
    seed = saved["config"]["spec"]["training"]["seed"]
    assert saved["rng"]["python"] == list(random.Random(seed).getstate()[1])


def test_corrupt_newest_checkpoint_falls_back(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    uri = f"s3://{bucket}/corrupt"
    base = ["run", SAMPLE, "--output", uri, "--s3-endpoint", s3_server.endpoint, *TINY, "--json"]
    first = run_trainer(*base, "--epochs", "3", env=s3_server.env)
    assert first.returncode == 0, first.stderr
    key = "corrupt/checkpoints/epoch-000003.pt"
    client = s3_server.client()
    body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    client.put_object(Bucket=bucket, Key=key, Body=body[: len(body) // 2])  # truncated
    again = run_trainer(*base, "--epochs", "4", env=s3_server.env)
    assert again.returncode == 0, again.stderr
    assert "epoch-000003.pt" in again.stderr and "falling back" in again.stderr
    [resume] = [e for e in events(again.stderr) if e["event"] == "resume"]
    assert resume["epoch"] == 2
    assert [e["epoch"] for e in events(again.stderr) if e["event"] == "epoch"] == [3, 4]


def test_wrong_secret_fails_fast_without_leaking(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    wrong = "wrongSecretValue1234567890"
    env = {**s3_server.env, "AWS_SECRET_ACCESS_KEY": wrong}
    t0 = time.monotonic()
    proc = run_trainer(
        "run",
        SAMPLE,
        "--output",
        f"s3://{bucket}/x",
        "--s3-endpoint",
        s3_server.endpoint,
        *TINY,
        "--epochs",
        "1",
        env=env,
    )
    assert proc.returncode == exitcodes.STORAGE_ERROR
    assert time.monotonic() - t0 < 60
    assert "credentials" in proc.stderr.lower() and "Traceback" not in proc.stderr
    assert wrong not in proc.stderr + proc.stdout
    assert s3_server.secret_key not in proc.stderr + proc.stdout
    missing = run_trainer(
        "run",
        SAMPLE,
        "--output",
        "s3://no-such-bucket/x",
        "--s3-endpoint",
        s3_server.endpoint,
        *TINY,
        "--epochs",
        "1",
        env=s3_server.env,
    )
    assert missing.returncode == exitcodes.STORAGE_ERROR
    assert "no-such-bucket" in missing.stderr and "does not exist" in missing.stderr


def test_data_and_backtest_from_s3(s3_server: S3Server, tmp_path: Path) -> None:
    bucket = s3_server.create_bucket()
    csv = (ROOT / "trainer" / "datasets" / "SOL-USD.csv").read_bytes()
    s3_server.client().put_object(Bucket=bucket, Key="data/SOL-USD.csv", Body=csv)
    uri = f"s3://{bucket}/from-s3"
    proc = run_trainer(
        "run",
        SAMPLE,
        "--output",
        uri,
        "--s3-endpoint",
        s3_server.endpoint,
        *TINY,
        "--epochs",
        "1",
        "--set",
        f"data.uri=s3://{bucket}/data/{{symbol}}-USD.csv",
        "--json",
        env=s3_server.env,
    )
    assert proc.returncode == 0, proc.stderr
    bt = run_trainer(
        "backtest",
        "--checkpoint",
        uri,
        "--data",
        f"s3://{bucket}/data/SOL-USD.csv",
        "--start",
        "2025-01-01",
        "--json",
        "--s3-endpoint",
        s3_server.endpoint,
        env=s3_server.env,
    )
    assert bt.returncode == 0, bt.stderr
    assert json.loads(bt.stdout)["n"] == 175
