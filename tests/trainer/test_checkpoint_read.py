"""A promotion's pointer as ``--checkpoint``: ``<prefix>/current`` and ``<prefix>/current.json`` name the promoted
model; ``current`` without a pointer beside it is a plain prefix; a missing or broken pointer is one clear error.
(Following it to a real model, locally and on S3: test_cli.py, test_promote_s3.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trainer.api.errors import ConfigError
from trainer.checkpoint_read import CheckpointIntegrityError, current_pointer


def test_current_and_current_json_name_the_promoted_model(tmp_path: Path) -> None:
    (tmp_path / "current.json").write_text(json.dumps({"model": "s3://b/ml/r1/best.pt", "run": "r1"}))
    for uri in (tmp_path / "current", tmp_path / "current.json", f"{tmp_path}/current/"):
        pointer = current_pointer(str(uri), None)
        assert (
            pointer is not None
            and pointer.model == "s3://b/ml/r1/best.pt"
            and pointer.prefix == "s3://b/ml/r1"
        )


def test_names_that_are_no_pointer(tmp_path: Path) -> None:
    assert current_pointer(str(tmp_path / "current"), None) is None  # no current.json beside it: a prefix
    assert current_pointer(str(tmp_path / "run1"), None) is None
    assert current_pointer(str(tmp_path / "current" / "best.pt"), None) is None


def test_a_missing_or_broken_pointer_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"current.json does not exist: nothing has been promoted under "):
        current_pointer(str(tmp_path / "current.json"), None)
    (tmp_path / "current.json").write_text("{")
    with pytest.raises(CheckpointIntegrityError, match=r"current.json is unreadable: "):
        current_pointer(str(tmp_path / "current"), None)
    (tmp_path / "current.json").write_text(json.dumps({"run": "r1"}))
    with pytest.raises(
        CheckpointIntegrityError, match=r"is not a current-model pointer \(model: Field required"
    ):
        current_pointer(str(tmp_path / "current"), None)
