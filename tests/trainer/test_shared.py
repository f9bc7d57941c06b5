"""The training windows of a data-parallel run: written once per machine, mapped by every rank, equal to what the
rank would have built itself, and gone from the file system once mapped."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trainer.candles import load_candles
from trainer.dataset import split_windows
from trainer.shared import _load, _save, shared_path


def test_a_mapped_copy_is_the_same_windows(tmp_path: Path) -> None:
    split = split_windows([load_candles(None, "SOL"), load_candles(None, "BTC")], 20, 7, 0.2)
    path = tmp_path / "w.pt"
    _save(split.train, path)
    mapped = _load(path)
    for name in ("observed", "known", "target", "symbol", "scale", "offset"):
        assert torch.equal(getattr(mapped, name), getattr(split.train, name)), name
    np.testing.assert_array_equal(mapped.last_close, split.train.last_close)
    np.testing.assert_array_equal(mapped.future_close, split.train.future_close)
    assert (mapped.origin == split.train.origin).all()
    assert not list(tmp_path.glob("*.tmp"))  # written atomically


def test_the_other_ranks_build_no_training_windows() -> None:
    candles = [load_candles(None, "SOL")]
    full = split_windows(candles, 20, 7, 0.2)
    small = split_windows(candles, 20, 7, 0.2, with_train=False)
    assert len(small.train) == 0 and len(full.train) > 0
    assert torch.equal(small.val.target, full.val.target) and small.trained == full.trained


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"TORCHELASTIC_RUN_ID": "abc", "GROUP_RANK": "1"}, "trainer-windows-abc-1.pt"),
        (
            {
                "TORCHELASTIC_RUN_ID": "none",
                "MASTER_ADDR": "w-0.svc",
                "MASTER_PORT": "29500",
                "GROUP_RANK": "1",
            },
            "trainer-windows-none-w-0.svc-29500-1.pt",
        ),
        ({"TORCHELASTIC_RUN_ID": "a/b c"}, "trainer-windows-a_b_c-0.pt"),
    ],
)
def test_one_file_per_run_and_machine(env: dict[str, str], name: str, tmp_path: Path) -> None:
    assert shared_path({**env, "TRAINER_SHARED_DIR": str(tmp_path)}) == tmp_path / name
