"""trainer.promote without training: where current.json lives, what a storage failure leaves behind (the
model stays, the status says why), an unreadable pointer, and the recorded figure when the current model cannot
be scored. The decision rule is tabled in tests/trainer/api/test_promotion.py; a real promotion on S3 is
test_promote_s3.py."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import cast

import pandas as pd
import pytest

from trainer import promote as promote_module
from trainer.api.manifest import parse_spec
from trainer.api.promotion import PromotionSpec
from trainer.checkpoint_read import CheckpointReader, sha256_hex
from trainer.dataset import Split, Windows
from trainer.promote import promote, promotion_prefix
from trainer.storage import LocalStorage, StorageUnavailableError

DOWN = "uploading s3://b/p/current.json: cannot reach S3 endpoint http://s3:9000 (EndpointConnectionError)"


@pytest.mark.parametrize(
    ("uri", "root", "prefix"),
    [
        (None, "s3://bkt/ml/sol-1", "s3://bkt/ml"),
        (None, "s3://bkt/sol-1/", "s3://bkt"),
        (None, "s3://bkt", "s3://bkt"),  # a bucket's root has no parent
        (None, "runs/sol-tft", "runs"),
        (None, "sol-tft", "."),
        ("s3://models/sol/", "s3://bkt/ml/sol-1", "s3://models/sol"),
    ],
)
def test_promotion_prefix(uri: str | None, root: str, prefix: str) -> None:
    assert promotion_prefix(PromotionSpec(uri=uri), root) == prefix


def _stored_run(root: Path) -> CheckpointReader:
    """A run prefix whose best.pt matches its best.json (the bytes need not be a model for the pointer)."""
    storage = LocalStorage(root)
    data = b"weights"
    storage.put("best.pt", data)
    storage.put("best.json", json.dumps({"epoch": 2, "key": "best.pt", "sha256": sha256_hex(data)}).encode())
    return CheckpointReader(storage, None, "cpu")


class _Flaky(LocalStorage):
    """A local prefix whose reads or writes of current.json fail like an unreachable S3 endpoint."""

    def __init__(self, root: Path, fail: str) -> None:
        super().__init__(root)
        self.fail = fail

    def get(self, key: str) -> bytes:
        if self.fail == "read":
            raise StorageUnavailableError(DOWN)
        return super().get(key)

    def put(self, key: str, data: bytes) -> None:
        if self.fail == "write":
            raise StorageUnavailableError(DOWN)
        super().put(key, data)


def _split() -> Split:
    """Only the validation dates of a split: nothing is scored where the current model cannot be loaded."""
    none = cast(Windows, None)
    period = (pd.Timestamp("2024-01-01"), pd.Timestamp("2025-03-01"))
    return Split(none, none, none, pd.Timestamp("2025-01-01"), period, ["SOL"])


def _promote(reader: CheckpointReader, value: float = 1.0, **promotion: object) -> dict[str, object]:
    spec = parse_spec({"symbol": "SOL", "promotion": promotion})
    status = promote(spec, "r1", reader, _split(), pd.DataFrame(), {"pinball": value, "mase": 0.9})
    return status.dump()


@pytest.mark.parametrize("fail", ["read", "write"])
def test_a_storage_failure_is_reported_and_the_model_stays(
    fail: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    reader = _stored_run(tmp_path / "r1")
    monkeypatch.setattr(promote_module, "storage_for", lambda uri, endpoint=None: _Flaky(Path(uri), fail))
    with caplog.at_level(logging.WARNING, logger="trainer.promote"):
        status = _promote(reader)
    assert status["promoted"] is False and status["value"] == 1.0 and status["incumbent"] is None
    assert status["message"] == (
        f"not promoted: current.json under {tmp_path} could not be read or written ({DOWN}); this run's model "
        f"is stored at {tmp_path / 'r1' / 'best.pt'}"
    )
    assert status["currentUri"] == str(tmp_path / "current.json")
    assert not (tmp_path / "current.json").exists() and (tmp_path / "r1" / "best.pt").is_file()
    assert [r.message for r in caplog.records] == [
        f"promotion failed (the run's model is stored, the run succeeds): {DOWN}"
    ]


def test_a_best_pt_that_does_not_match_its_record_is_never_promoted(tmp_path: Path) -> None:
    reader = _stored_run(tmp_path / "r1")
    (tmp_path / "r1" / "best.pt").write_bytes(b"rewritten")
    status = _promote(reader)
    assert status["promoted"] is False and "is corrupt or truncated" in str(status["message"])
    assert not (tmp_path / "current.json").exists()


def test_first_promotion_writes_the_pointer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRAININGRUN_NAMESPACE", "ml")
    reader = _stored_run(tmp_path / "r1")
    (tmp_path / "current.json").write_text("{not json")  # unreadable: nobody can follow it, so it is replaced
    spec = parse_spec({"symbol": "SOL", "promotion": {"metric": "mase"}})
    status = promote(spec, "r1", reader, _split(), pd.DataFrame(), {"pinball": 2.0, "mase": 0.9}).dump()
    assert status["promoted"] is True and status["metric"] == "mase" and status["value"] == 0.9
    assert str(status["message"]).startswith(
        "promoted: no current model; this run's mase is 0.9; the existing"
    )
    pointer = json.loads((tmp_path / "current.json").read_text())
    assert pointer["model"] == str(tmp_path / "r1" / "best.pt") and pointer["checkpoint"] == str(
        tmp_path / "r1"
    )
    assert pointer["sha256"] == sha256_hex(b"weights") and pointer["namespace"] == "ml"
    assert (pointer["metric"], pointer["value"], pointer["run"]) == ("mase", 0.9, "r1")
    assert pointer["validation"] == {"start": "2025-01-01", "end": "2025-03-01"}


@pytest.mark.parametrize(("value", "promoted"), [(1.0, True), (3.0, False)])
def test_a_current_model_that_cannot_be_scored_is_compared_by_its_record(
    value: float, promoted: bool, tmp_path: Path
) -> None:
    reader = _stored_run(tmp_path / "r1")
    gone = {"model": str(tmp_path / "gone" / "best.pt"), "metric": "pinball", "value": 2.0, "run": "r0"}
    (tmp_path / "current.json").write_text(json.dumps(gone))
    status = _promote(reader, value)
    assert status["promoted"] is promoted and status["incumbent"] == 2.0
    assert "the current model (r0) could not be scored on this run's windows (" in str(status["message"])
    assert str(status["message"]).endswith("so its recorded pinball is used")
    assert (json.loads((tmp_path / "current.json").read_text())["run"] == "r1") is promoted


def test_a_recorded_figure_of_another_metric_is_no_figure(tmp_path: Path) -> None:
    reader = _stored_run(tmp_path / "r1")
    gone = {"model": str(tmp_path / "gone" / "best.pt"), "metric": "mase", "value": 0.5}
    (tmp_path / "current.json").write_text(json.dumps(gone))
    status = _promote(reader, 9.0)
    assert status["promoted"] is True and status["incumbent"] is None
    assert "and it has none for pinball" in str(status["message"])
