"""trainer.checkpoint on local disk and a real S3 server: layout, pruning, integrity fallback, unsafe pickles,
resume semantics, outages and the upload deadline."""

# ruff: noqa: F811  (the s3_server/s3_env fixtures are imported explicitly and used as parameters)
from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.s3server import S3Server, s3_env, s3_server  # noqa: F401
from trainer.checkpoint import (
    CheckpointIntegrityError,
    CheckpointStore,
    NoValidCheckpointError,
    UnsafeCheckpointError,
    UploadDeadlineError,
    resolve_resume,
    sha256_hex,
)
from trainer.storage import BucketNotFoundError, CredentialsError, MalformedURIError, Storage
from trainer.storage_s3 import S3Storage

REPO = Path(__file__).resolve().parents[2]


def state(epoch: int) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "model": {"w": torch.full((8, 8), float(epoch)), "b": torch.arange(4.0)},
        "optimizer": {"state": {0: {"step": torch.tensor(float(epoch))}}, "param_groups": [{"lr": 1e-3}]},
        "rng": {"torch": torch.get_rng_state()},
        "config": {"symbol": "SOL", "betas": (0.9, 0.999)},
        "early_stopping": {"best": 0.5, "bad_epochs": 1},
    }


@pytest.fixture(params=["local", "s3"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "run")
    server: S3Server = request.getfixturevalue("s3_env")
    return f"s3://{server.create_bucket()}/runs/sol"


@pytest.fixture
def s3_root(s3_env: S3Server) -> str:
    return f"s3://{s3_env.create_bucket()}/runs/sol"


def _raw_put(store: CheckpointStore, key: str, data: bytes) -> None:
    store.storage.put(key, data)  # overwrite behind the store's back (any S3 client / a disk fault)


def test_round_trip_layout_and_pruning(root: str) -> None:
    store = CheckpointStore(root, keep_last=3)
    store.check()
    assert resolve_resume(store, "auto") is None  # nothing yet
    for epoch in range(1, 7):
        uri = store.save(epoch, state(epoch), is_best=epoch == 2)
        assert uri == store.uri(f"checkpoints/epoch-{epoch:06d}.pt")
        store.flush(30)  # each one stored, so pruning is exercised
    store.write_json("metrics.json", {"val_loss": 0.1})
    store.write_json("config.json", {"symbol": "SOL"})
    store.write_bytes("forecast.png", b"\x89PNG fake")
    store.close(30)

    keys = set(store.storage.list())
    assert {f"checkpoints/epoch-{e:06d}.pt" for e in (4, 5, 6)} <= keys
    assert not any(f"epoch-{e:06d}" in k for k in keys for e in (1, 2, 3))  # pruned, sidecars too
    assert {"best.pt", "best.json", "latest.json", "metrics.json", "config.json", "forecast.png"} <= keys
    latest = json.loads(store.storage.get("latest.json"))
    data6 = store.storage.get("checkpoints/epoch-000006.pt")
    assert latest["epoch"] == 6 and latest["key"] == "checkpoints/epoch-000006.pt"
    assert latest["size"] == len(data6) and latest["sha256"] == sha256_hex(data6) and latest["time"]
    assert [h["epoch"] for h in latest["history"]] == [6, 5, 4]
    assert latest["best"]["epoch"] == 2
    sidecar = store.storage.get("checkpoints/epoch-000006.pt.sha256").decode()
    assert sidecar == f"{sha256_hex(data6)}  epoch-000006.pt\n"

    loaded = resolve_resume(CheckpointStore(root), "auto")
    assert loaded is not None and loaded.epoch == 6 and not loaded.skipped
    assert torch.equal(loaded.state["model"]["w"], torch.full((8, 8), 6.0))
    assert loaded.state["config"]["betas"] == (0.9, 0.999)
    best = CheckpointStore(root).load_checkpoint(store.uri("best.pt")).state
    assert best["epoch"] == 2


def test_newest_pending_wins_and_older_best_is_kept(tmp_path: Path) -> None:
    class Slow:
        """A real LocalStorage whose first put blocks until released, so saves pile up."""

        def __init__(self, inner: Storage) -> None:
            self.inner, self.gate, self.puts = inner, threading.Event(), list[str]()

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

        def put(self, key: str, data: bytes) -> None:
            self.gate.wait(10)
            self.puts.append(key)
            self.inner.put(key, data)

    from trainer.storage import LocalStorage

    slow = Slow(LocalStorage(tmp_path))
    store = CheckpointStore(str(tmp_path), storage=slow)  # type: ignore[arg-type]
    store.save(1, state(1))
    time.sleep(0.2)  # epoch 1 is in flight, blocked
    store.save(2, state(2), is_best=True)
    store.save(3, state(3))
    store.save(4, state(4))
    slow.gate.set()
    store.flush(30)
    assert "checkpoints/epoch-000003.pt" not in slow.puts  # superseded before upload
    assert json.loads(slow.get("latest.json"))["epoch"] == 4
    assert json.loads(slow.get("best.json"))["epoch"] == 2  # the older pending best still reached best.pt


class Gated:
    """A real storage whose puts wait for ``gate`` (or fail while ``down`` is set), to hold uploads in flight."""

    def __init__(self, inner: Storage) -> None:
        self.inner, self.gate, self.down = inner, threading.Event(), threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def put(self, key: str, data: bytes) -> None:
        from trainer.storage import StorageUnavailableError

        if self.down.is_set():
            raise StorageUnavailableError(f"uploading {key}: cannot reach the endpoint")
        self.gate.wait(10)
        self.inner.put(key, data)


def test_stored_names_a_checkpoint_only_once_it_is_stored(tmp_path: Path) -> None:
    from trainer.storage import LocalStorage

    gated = Gated(LocalStorage(tmp_path))
    store = CheckpointStore(str(tmp_path), storage=gated)  # type: ignore[arg-type]
    assert store.stored is None
    uri = store.save(1, state(1), is_best=True)
    time.sleep(0.2)
    assert store.stored is None, "queued (in flight), not stored: nothing may point at it yet"
    gated.gate.set()
    store.flush(30)
    stored = store.stored
    assert (
        stored is not None
        and (stored.epoch, stored.latest) == (1, uri)
        and stored.best == store.uri("best.pt")
    )
    gated.down.set()
    store.save(2, state(2))
    time.sleep(0.3)
    assert store.stored == stored, "an upload that failed leaves the status at the last stored checkpoint"
    store.close(1, quiet=True)


def test_one_line_when_uploads_recover(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from trainer.storage import LocalStorage

    gated = Gated(LocalStorage(tmp_path))
    gated.gate.set()
    gated.down.set()
    store = CheckpointStore(str(tmp_path), storage=gated, retry_initial_s=0.05, retry_max_s=0.1)  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="trainer.checkpoint"):
        store.save(1, state(1))
        time.sleep(0.5)
        gated.down.clear()
        store.flush(30)
        store.save(2, state(2))
        store.flush(30)
    failed = [r for r in caplog.records if "checkpoint upload failed" in r.getMessage()]
    recovered = [r for r in caplog.records if "recovered" in r.getMessage()]
    assert len(failed) >= 2 and all(r.levelno == logging.WARNING for r in failed)
    assert len(recovered) == 1, [r.getMessage() for r in caplog.records]
    assert re.search(
        r"recovered after \d+ failed attempts \(\d+\.\ds\); stored: epoch 1", recovered[0].getMessage()
    )
    assert store.stored is not None and store.stored.epoch == 2


@pytest.mark.parametrize("interactive", [False, True])
def test_uploader_lines_are_printed_like_progress_without_credentials(
    tmp_path: Path, interactive: bool
) -> None:
    """During a run (``trainer.run._printed_by``) the uploader's warnings are JSON lines when not in a terminal
    (plain ``warning: ...`` lines above the bar in one), and a URL's userinfo is never printed."""
    from trainer.console import Progress
    from trainer.run import _printed_by
    from trainer.storage import LocalStorage

    stream = io.StringIO()
    progress = Progress(3, 0, interactive=interactive, stream=stream)
    gated = Gated(LocalStorage(tmp_path))
    gated.gate.set()
    gated.down.set()
    store = CheckpointStore(str(tmp_path), storage=gated, retry_initial_s=0.05, retry_max_s=0.05)  # type: ignore[arg-type]
    with _printed_by(progress):
        store.save(1, state(1))
        time.sleep(0.3)
        logging.getLogger("trainer.checkpoint").warning("endpoint http://AKID:s3cr3t@10.0.0.1:8333 is slow")
        gated.down.clear()
        store.flush(30)
    store.close(5)
    lines = [ln for ln in stream.getvalue().splitlines() if "checkpoint upload" in ln or "endpoint" in ln]
    assert lines and "s3cr3t" not in stream.getvalue() and "http://***@10.0.0.1:8333" in stream.getvalue()
    if interactive:
        assert all(ln.startswith(("warning: ", "info: ")) for ln in lines), lines
    else:
        parsed = [json.loads(ln) for ln in lines]
        assert {p["event"] for p in parsed} <= {"warning", "info"} and parsed[0][
            "logger"
        ] == "trainer.checkpoint"
        assert any("recovered after" in p["message"] for p in parsed)


def test_an_exception_leaving_the_with_block_stays_the_error(tmp_path: Path) -> None:
    """``with store:`` while a NaN loss (or a signal) ends the run and storage is down: a short, quiet close,
    and the original exception is what propagates."""
    from trainer.storage import LocalStorage

    gated = Gated(LocalStorage(tmp_path))
    gated.down.set()
    t0 = time.monotonic()
    with pytest.raises(ZeroDivisionError), CheckpointStore(str(tmp_path), storage=gated) as store:  # type: ignore[arg-type]
        store.save(1, state(1))
        raise ZeroDivisionError
    assert time.monotonic() - t0 < 10


def test_trainer_python_rng_is_not_the_global_one() -> None:
    """botocore's retry jitter draws from the global ``random`` on the uploader thread during an outage; the
    Python state a checkpoint saves is the trainer's own generator, so it does not depend on the network."""
    import random

    from trainer import rng

    rng.PYTHON.seed(7)
    before = rng.rng_state()["python"]
    for _ in range(100):
        random.random()  # what botocore does, retry after retry
    assert rng.rng_state()["python"] == before
    drawn = rng.PYTHON.random()
    rng.set_rng_state({**rng.rng_state(), "python": before})
    assert rng.PYTHON.random() == drawn, "restoring continues the trainer's generator exactly"


def test_latest_json_is_written_only_after_its_object(s3_root: str) -> None:
    store = CheckpointStore(s3_root, keep_last=2)
    reader = S3Storage(store.storage.bucket, store.storage.prefix)  # type: ignore[attr-defined]
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # a concurrent reader: every pointer it sees must lead to a complete object
        while not stop.is_set():
            try:
                ptr = json.loads(reader.get("latest.json"))
            except Exception:
                continue
            data = reader.get(ptr["key"])
            assert sha256_hex(data) == ptr["sha256"] and len(data) == ptr["size"]
            seen.append(ptr["epoch"])

    t = threading.Thread(target=watch)
    t.start()
    try:
        for epoch in range(1, 9):
            store.save(epoch, state(epoch))
            time.sleep(0.05)
        store.flush(30)
    finally:
        stop.set()
        t.join(10)
    assert seen and seen == sorted(seen) and seen[-1] == 8


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "delete"])
def test_bad_newest_falls_back_with_warning(root: str, fault: str, caplog: pytest.LogCaptureFixture) -> None:
    store = CheckpointStore(root)
    for epoch in (1, 2, 3):
        store.save(epoch, state(epoch))
        store.flush(30)
    key = "checkpoints/epoch-000003.pt"
    data = store.storage.get(key)
    if fault == "corrupt":
        _raw_put(store, key, data[:100] + bytes(b ^ 0xFF for b in data[100:200]) + data[200:])
    elif fault == "truncate":
        _raw_put(store, key, data[: len(data) // 2])
    else:
        store.storage.delete(key)
    with caplog.at_level(logging.WARNING, logger="trainer.checkpoint"):
        loaded = resolve_resume(CheckpointStore(root), "auto")
    assert loaded is not None and loaded.epoch == 2
    assert torch.equal(loaded.state["model"]["w"], torch.full((8, 8), 2.0))
    uri = store.uri(key)
    assert uri in caplog.text and "falling back" in caplog.text
    assert len(loaded.skipped) == 1 and uri in loaded.skipped[0]
    if fault != "delete":
        assert "corrupt or truncated" in loaded.skipped[0]
    # Asked for by path, the bad one is an error (no silent fallback).
    if fault != "delete":
        with pytest.raises(CheckpointIntegrityError, match="corrupt or truncated"):
            resolve_resume(CheckpointStore(root), uri)


def test_fallback_uses_sidecars_when_latest_json_is_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = CheckpointStore(str(tmp_path), keep_last=3)
    for epoch in (1, 2, 3):
        store.save(epoch, state(epoch), is_best=epoch == 1)
        store.flush(30)
    _raw_put(store, "latest.json", b'{"epoch": 3, "key": "checkp')  # torn by hand
    _raw_put(store, "checkpoints/epoch-000003.pt", b"garbage")
    loaded = CheckpointStore(str(tmp_path)).latest()
    assert loaded is not None and loaded.epoch == 2
    assert "latest.json is unreadable" in caplog.text
    for epoch in (1, 2):
        _raw_put(store, f"checkpoints/epoch-{epoch:06d}.pt", b"garbage")
    assert CheckpointStore(str(tmp_path)).latest().epoch == 1  # type: ignore[union-attr]  # best.pt, last resort
    _raw_put(store, "best.pt", b"garbage")
    with pytest.raises(NoValidCheckpointError, match="no intact checkpoint"):
        CheckpointStore(str(tmp_path)).latest()


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


def test_malicious_pickle_is_refused(root: str, tmp_path: Path) -> None:
    store = CheckpointStore(root)
    store.save(1, state(1))
    store.flush(30)
    marker = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"epoch": 2, "model": _Evil(marker)}, buf)
    payload = buf.getvalue()
    # Control: the payload really runs code when loaded unsafely.
    control = tmp_path / "control"
    torch.save({"x": _Evil(control)}, buf := io.BytesIO())
    torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
    assert control.is_dir()
    # Plant it as the newest checkpoint with a *matching* sha256 record.
    key = "checkpoints/epoch-000002.pt"
    _raw_put(store, key, payload)
    _raw_put(store, f"{key}.sha256", f"{sha256_hex(payload)}  epoch-000002.pt\n".encode())
    ptr = json.loads(store.storage.get("latest.json"))
    ptr.update(epoch=2, key=key, size=len(payload), sha256=sha256_hex(payload))
    _raw_put(store, "latest.json", json.dumps(ptr).encode())

    with pytest.raises(UnsafeCheckpointError, match=r"refusing to load .*epoch-000002\.pt.*posix\.mkdir"):
        resolve_resume(CheckpointStore(root), "auto")
    with pytest.raises(UnsafeCheckpointError, match="it was not executed"):
        CheckpointStore(root).load_checkpoint(store.uri(key))
    assert not marker.exists()


def test_resume_modes(
    tmp_path: Path, s3_root: str, s3_env: S3Server, caplog: pytest.LogCaptureFixture
) -> None:
    s3_store = CheckpointStore(s3_root)
    for epoch in (1, 2):
        s3_store.save(epoch, state(epoch))
        s3_store.flush(30)
    local_store = CheckpointStore(str(tmp_path / "new-run"))
    assert resolve_resume(local_store, "never") is None
    assert resolve_resume(local_store, "auto") is None
    # PATH = an s3:// URI of a specific checkpoint elsewhere: verified through its sidecar.
    got = resolve_resume(local_store, s3_store.uri("checkpoints/epoch-000001.pt"))
    assert (
        got is not None and got.epoch == 1 and torch.equal(got.state["model"]["w"], torch.full((8, 8), 1.0))
    )
    # PATH = a plain local file without any record: loads (weights_only) with a warning.
    plain = tmp_path / "exported.pt"
    torch.save(state(7), plain)
    got = resolve_resume(local_store, str(plain))
    assert got is not None and got.epoch == 7
    assert "no sha256 record" in caplog.text
    with pytest.raises(FileNotFoundError):
        resolve_resume(local_store, str(tmp_path / "missing.pt"))


def test_fail_fast_errors(s3_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(MalformedURIError, match=r"malformed URI 's3:/x': expected s3://bucket/prefix"):
        CheckpointStore("s3:/x")
    with pytest.raises(
        BucketNotFoundError, match=f"bucket 'nope-bucket' does not exist at endpoint {s3_env.endpoint}"
    ):
        CheckpointStore("s3://nope-bucket/run").check()
    bucket = s3_env.create_bucket()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-123")
    with pytest.raises(CredentialsError, match=r"S3 rejected the credentials \(SignatureDoesNotMatch\)"):
        CheckpointStore(f"s3://{bucket}/run").check()


def test_secret_never_appears_in_output_errors_or_objects(s3_env: S3Server, s3_root: str) -> None:
    """A subprocess with a wrong secret (stdout, stderr), then saved objects: the secret appears nowhere."""
    wrong = "WRONGSECRET" + s3_env.secret_key[::-1]
    script = (
        "import logging, sys; logging.basicConfig(level=logging.DEBUG)\n"
        "from trainer.checkpoint import CheckpointStore\n"
        "from trainer.storage import StorageError\n"
        "try:\n    CheckpointStore(sys.argv[1]).check()\n"
        "except StorageError as e:\n    print('ERROR:', e); raise\n"
    )
    env = {**os.environ, **s3_env.env, "AWS_SECRET_ACCESS_KEY": wrong, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", script, s3_root],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "CredentialsError" in out and "SignatureDoesNotMatch" in out
    assert wrong not in out and s3_env.secret_key not in out

    store = CheckpointStore(s3_root)
    store.save(1, {**state(1), "env": dict(os.environ)}, is_best=True)  # even a careless state dump
    store.write_json("config.json", {"symbol": "SOL"})
    store.close(30)
    client = s3_env.client()
    bucket = s3_root.split("/")[2]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert len(keys) >= 6
    for key in keys:
        if key.endswith(".pt"):
            continue  # this test deliberately dumped os.environ into the state; the records must stay clean
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert s3_env.secret_key.encode() not in body, key


@pytest.mark.slow
def test_outage_mid_run_recovers(s3_env: S3Server, s3_root: str) -> None:
    store = CheckpointStore(s3_root, upload_deadline_s=120, retry_initial_s=0.2, retry_max_s=1.0)
    store.save(1, state(1))
    store.flush(30)
    s3_env.stop()
    try:
        for epoch in (2, 3, 4):
            t0 = time.monotonic()
            store.save(epoch, state(epoch))
            assert time.monotonic() - t0 < 1.0  # training is not held up
            time.sleep(0.3)
    finally:
        s3_env.start()
    store.flush(60)
    ptr = json.loads(store.storage.get("latest.json"))
    assert ptr["epoch"] == 4
    loaded = CheckpointStore(s3_root).latest()
    assert loaded is not None and loaded.epoch == 4 and not loaded.skipped


@pytest.mark.slow
def test_outage_beyond_deadline_fails_clearly(s3_env: S3Server, s3_root: str) -> None:
    store = CheckpointStore(s3_root, upload_deadline_s=2, retry_initial_s=0.2, retry_max_s=0.5)
    store.check()
    s3_env.stop()
    try:
        t0 = time.monotonic()
        store.save(1, state(1))
        assert time.monotonic() - t0 < 1.0
        with pytest.raises(
            UploadDeadlineError, match=r"uploadDeadlineSeconds=2; not stored: epoch 1"
        ) as info:
            store.flush(60)
        assert time.monotonic() - t0 < 30
        assert s3_env.endpoint in str(info.value) and s3_env.secret_key not in str(info.value)
        with pytest.raises(UploadDeadlineError):
            store.save(2, state(2))
    finally:
        s3_env.start()


@pytest.fixture(autouse=True)
def _server_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test did to the shared server, the next one finds it running."""
    yield
    if "s3_server" in request.fixturenames:
        server: S3Server = request.getfixturevalue("s3_server")
        if server.proc is None:
            server.start()


def test_resume_checks_architecture(tmp_path: Path) -> None:
    from trainer.api.spec import TrainingRunSpec
    from trainer.checkpoint import IncompatibleCheckpointError
    from trainer.dataset import FEATURES_VERSION

    spec = TrainingRunSpec(symbol="SOL")
    store = CheckpointStore(str(tmp_path))
    config = {"spec": spec.model_dump(mode="json", by_alias=True), "featuresVersion": FEATURES_VERSION}
    store.save(1, {**state(1), "config": config})
    store.flush(30)
    loaded = resolve_resume(store, "auto", spec, "cpu")
    assert loaded is not None and loaded.best_model is None
    other = TrainingRunSpec.model_validate({"symbol": "SOL", "model": {"hiddenSize": 64}})
    with pytest.raises(IncompatibleCheckpointError, match="hiddenSize: checkpoint 32, spec 64"):
        resolve_resume(store, "auto", other)
