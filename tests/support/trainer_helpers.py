"""Running the real trainer CLI in a subprocess, small and fast, for tests (shared by several test modules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = str(ROOT / "manifests" / "samples" / "sol-run.yaml")
# A tiny SOL-only model: the behaviour under test does not depend on size, and it trains in seconds.
TINY = [
    "--set",
    "symbols=null",
    "--set",
    "model.hiddenSize=8",
    "--set",
    "model.attentionHeads=2",
    "--set",
    "data.inputWindow=20",
]


def trainer_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TRAININGRUN_"))}
    env.update(
        {"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg", "PYTHONPATH": str(ROOT)}
    )
    env.update(extra or {})
    return env


def trainer_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainer", *args]


def run_trainer(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        trainer_cmd(*args), capture_output=True, text=True, timeout=timeout, env=trainer_env(env), cwd=ROOT
    )


def popen_trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The trainer CLI in the background, stdout and stderr merged, for tests that signal or kill it."""
    return subprocess.Popen(
        trainer_cmd(*args),
        cwd=ROOT,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=trainer_env(env),
    )


def events(text: str) -> list[dict[str, Any]]:
    """The JSON-lines events a non-interactive trainer prints."""
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def final_weights(path: Path) -> dict[str, torch.Tensor]:
    """The last weights and the best epoch's weights of a checkpoint, as one flat dict."""
    state = torch.load(path, weights_only=True, map_location="cpu")
    return {**state["model"], **{f"best.{k}": v for k, v in state["best_model"].items()}}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"
