"""``uploadDeadlineSeconds`` against a *frozen* S3 server (SIGSTOP: connections are accepted, nothing answers).

Why frozen and not stopped: a stopped server refuses connections at once, so every attempt fails fast; a frozen
one makes each botocore attempt wait for its read timeout (30 s, 3 attempts per upload), which is how a hung
storage node or a network partition behaves. The deadline is measured from the start of the first failed
attempt and bounds it: a run fails ``uploadDeadlineSeconds`` after storage froze, not after botocore's
timeouts and retries have added up (173 s for a 30 s deadline, before)."""

# ruff: noqa: F811  (the s3_server/s3_env fixtures are imported explicitly and used as parameters)
from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from tests.support.s3server import S3Server, s3_env, s3_server  # noqa: F401
from tests.support.trainer_helpers import SAMPLE, TINY, popen_trainer
from trainer.api import exitcodes
from trainer.checkpoint import CheckpointStore, UploadDeadlineError
from trainer.storage_s3 import S3Storage


@contextlib.contextmanager
def frozen(server: S3Server) -> Iterator[None]:
    """The server's whole process group stopped (SIGSTOP) for the block, then continued."""
    assert server.proc is not None, "the S3 server is not running"
    os.killpg(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(server.proc.pid, signal.SIGCONT)


def state() -> dict[str, Any]:
    return {"model": {"w": torch.zeros(64, 64)}, "epoch": 1}


@pytest.fixture
def s3_root(s3_env: S3Server) -> str:
    return f"s3://{s3_env.create_bucket()}/runs/frozen"


def test_deadline_bounds_an_upload_that_hangs(s3_env: S3Server, s3_root: str) -> None:
    """botocore's own timeouts (30 s read, 3 attempts) would hold the first attempt for 90 s and more; the
    deadline counts from that attempt's start."""
    store = CheckpointStore(s3_root, upload_deadline_s=3)
    store.check()
    with frozen(s3_env):
        t0 = time.monotonic()
        store.save(1, state())
        assert time.monotonic() - t0 < 1.0, "training is not held up"
        with pytest.raises(
            UploadDeadlineError, match=r"uploadDeadlineSeconds=3; not stored: epoch 1"
        ) as info:
            store.flush(120)
        elapsed = time.monotonic() - t0
    assert 3 <= elapsed < 5, f"the deadline fired {elapsed:.1f}s after storage froze"
    assert s3_env.secret_key not in str(info.value)
    with pytest.raises(UploadDeadlineError):
        store.save(2, state())  # sticky: the run fails at its next checkpoint


def test_deadline_counts_from_the_start_of_the_first_failed_attempt(s3_env: S3Server, s3_root: str) -> None:
    """An attempt that ends in a read timeout after 2 s (2 attempts of 1 s) started the outage at its start:
    with a 3 s deadline the store fails at 3 s, not 3 s after the attempt failed."""
    bucket, prefix = s3_root.removeprefix("s3://").split("/", 1)
    storage = S3Storage(bucket, prefix, s3_env.endpoint, read_timeout=1.0, max_attempts=2)
    store = CheckpointStore(s3_root, storage=storage, upload_deadline_s=3, retry_initial_s=0.2)
    store.check()
    with frozen(s3_env):
        t0 = time.monotonic()
        store.save(1, state())
        with pytest.raises(UploadDeadlineError):
            store.flush(60)
        elapsed = time.monotonic() - t0
    assert 3 <= elapsed < 4.5, f"the deadline fired {elapsed:.1f}s after storage froze"


@pytest.mark.slow
def test_training_run_fails_at_the_deadline_when_storage_freezes(s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    args = [*TINY, "--epochs", "60", "--set", "training.batchSize=16", "--json"]
    proc = popen_trainer(
        "run",
        SAMPLE,
        "--output",
        f"s3://{bucket}/frozen",
        "--s3-endpoint",
        s3_server.endpoint,
        *args,
        "--set",
        "checkpoint.uploadDeadlineSeconds=5",
        env=s3_server.env,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("{") and json.loads(line).get("event") == "epoch":
            break
    with frozen(s3_server):
        t0 = time.monotonic()
        rest, _ = proc.communicate(timeout=180)
        elapsed = time.monotonic() - t0
    out = "".join(lines) + rest
    assert proc.returncode == exitcodes.STORAGE_ERROR, out[-3000:]
    assert "uploadDeadlineSeconds=5" in out
    assert elapsed < 30, f"exit {elapsed:.0f}s after storage froze (deadline 5 s)"
