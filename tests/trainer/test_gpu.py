"""GPU-only checks (marker `gpu`, deselected by default; run with `pytest -m gpu` on a CUDA machine):
the captured CUDA-graph train step computes what the eager step computes, and a CUDA run's checkpoints load and
evaluate on a CPU-only machine."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from trainer.api.manifest import parse_spec
from trainer.candles import load_candles
from trainer.dataset import split_windows
from trainer.evaluate import backtest, load_model
from trainer.loop import StopFlag, Trainer
from trainer.run import RunOptions, run_training

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

SPEC = {"symbol": "SOL", "model": {"dropout": 0.0}, "training": {"epochs": 2, "device": "cuda"}}


def _train(cuda_graph: bool) -> dict[str, torch.Tensor]:
    spec = parse_spec(SPEC)
    split = split_windows([load_candles(None, "SOL")], 60, 7, 0.2)
    trainer = Trainer(spec, split, torch.device("cuda"), cuda_graph=cuda_graph)
    stop = StopFlag()
    for _ in range(2):
        t0 = time.perf_counter()
        trainer.train_epoch(stop)
        trainer.finish_epoch(time.perf_counter() - t0)
    assert (trainer._graph is not None) == cuda_graph
    return {k: v.detach().cpu() for k, v in trainer.model.state_dict().items()}


def test_cuda_graph_step_matches_eager() -> None:
    graphed, eager = _train(True), _train(False)
    for k in eager:
        torch.testing.assert_close(graphed[k], eager[k], rtol=1e-3, atol=1e-4, msg=k)


def test_cuda_run_checkpoints_load_on_cpu(tmp_path: Path) -> None:
    spec = parse_spec(SPEC)
    summary = run_training(
        spec, RunOptions(name="gpu", output=str(tmp_path), interactive=False, report=False)
    )
    assert summary["device"] == "cuda"
    model = load_model(str(tmp_path))
    assert next(model.model.parameters()).device.type == "cpu"
    result = backtest(model, None, start="2025-01-01")
    assert result["n"] == 175 and 0.5 < result["mase"] < 1.5
