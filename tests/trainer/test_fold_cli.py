"""``python -m trainer fold``: one pod per fold, pooled from the pods' statistics, prints the very metrics of the
local ``backtest --walk-forward`` for the same spec and data; a fold the spec does not have, or data that end
before the walk-forward does, exit 2 with one line naming the field."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.trainer_helpers import events, run_trainer
from trainer.api.foldstats import FoldStats, pooled

START, END, REFIT = "2025-05-20", "2025-06-30", "15d"  # 3 folds of first-target days, the last 6 days long
FOLDS = [("2025-05-20", "2025-06-03"), ("2025-06-04", "2025-06-18"), ("2025-06-19", "2025-06-24")]


def manifest(walk_forward: dict[str, str] | None, **checkpoint: str) -> dict[str, Any]:
    """A tiny SOL-only TrainingRun (trains in seconds) with ``walk_forward``."""
    spec: dict[str, Any] = {
        "symbol": "SOL",
        "model": {"hiddenSize": 8, "attentionHeads": 2, "dropout": 0.0},
        "data": {"inputWindow": 20},
        "training": {"epochs": 2, "device": "cpu"},
        "checkpoint": checkpoint,
    }
    if walk_forward is not None:
        spec["walkForward"] = walk_forward
    return {
        "apiVersion": "cryptopredictor.dev/v1alpha1",
        "kind": "TrainingRun",
        "metadata": {"name": "wf"},
        "spec": spec,
    }


def write(tmp: Path, doc: dict[str, Any], name: str = "run.yaml") -> str:
    path = tmp / name
    path.write_text(yaml.safe_dump(doc))
    return str(path)


WF = {"start": START, "end": END, "refitEvery": REFIT}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every fold as its own process, as the pods of the Indexed Job run them: fold 0 with --index and --output,
    the others with $JOB_COMPLETION_INDEX and the manifest in an env var whose checkpoint.uri is the same dir."""
    tmp = tmp_path_factory.mktemp("folds")
    out = tmp / "out"
    path = write(tmp, manifest(WF))
    pod_manifest = json.dumps(manifest(WF, uri=str(out)))
    stats, lines = [], []
    for k in range(len(FOLDS)):
        term = tmp / f"termination-{k}"
        env = {"TRAINER_TERMINATION_MESSAGE_PATH": str(term)}
        if k == 0:
            proc = run_trainer("fold", path, "--index", "0", "--output", str(out), env=env)
        else:
            env |= {"JOB_COMPLETION_INDEX": str(k), "TRAININGRUN_MANIFEST": pod_manifest}
            proc = run_trainer("fold", "--manifest-env", "TRAININGRUN_MANIFEST", env=env)
        assert proc.returncode == 0, proc.stderr
        message = term.read_text()
        assert (out / "folds" / f"{k:03d}.json").read_text() == message  # the same JSON in both places
        stats.append(FoldStats.model_validate_json(message))
        lines.append(json.loads(proc.stdout))
    return {"stats": stats, "lines": lines, "out": out, "manifest": path}


@pytest.fixture(scope="module")
def local(cluster: dict[str, Any]) -> dict[str, Any]:
    proc = run_trainer(
        "backtest", "--walk-forward", "--spec", cluster["manifest"], "--start", START, "--end", END,
        "--refit-every", REFIT, "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def assert_close(got: Any, want: Any, path: str = "") -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), path
        for k in want:
            assert_close(got[k], want[k], f"{path}.{k}")
    elif want is None or isinstance(want, int):
        assert got == want, path
    else:
        assert math.isclose(got, want, rel_tol=1e-9), f"{path}: {got} != {want}"


@pytest.mark.slow
def test_pooled_pod_statistics_equal_the_local_walk_forward(
    cluster: dict[str, Any], local: dict[str, Any]
) -> None:
    stats: list[FoldStats] = cluster["stats"]
    assert [(s.index, s.start, s.end) for s in stats] == [(i, a, b) for i, (a, b) in enumerate(FOLDS)]
    assert [s.n for s in stats] == [f["n"] for f in local["folds"]] == [15, 15, 6]
    got = pooled(stats)
    want = {k: v for k, v in local.items() if k not in ("folds", "extra")}
    assert_close(got, want)
    assert set(got["baselines"]) == {"empirical", "ewma", "garch"} and got["da_h7"] is not None
    for s, row in zip(stats, local["folds"], strict=True):  # the same decisions per fold
        assert (s.median, s.band, s.epochs) == (row["median"], row["band"], row["epochs"])


@pytest.mark.slow
def test_a_fold_prints_one_json_line_naming_where_it_wrote(cluster: dict[str, Any]) -> None:
    for k, line in enumerate(cluster["lines"]):
        assert line["event"] == "fold" and line["index"] == k and line["of"] == len(FOLDS)
        assert line["stats"] == str(cluster["out"] / "folds" / f"{k:03d}.json")
        assert line["termination_message"].endswith(f"termination-{k}")
        assert line["n"] == cluster["stats"][k].n and line["start"] == FOLDS[k][0]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--index", "3"], {}, "--index 3: no such fold; spec.walkForward has 3 folds (0..2)"),
        (["--index", "-1"], {}, "--index -1: no such fold"),
        (
            [],
            {"JOB_COMPLETION_INDEX": "7"},
            "$JOB_COMPLETION_INDEX 7: no such fold; spec.walkForward has 3 folds",
        ),
        ([], {}, "give --index K or set $JOB_COMPLETION_INDEX; spec.walkForward has 3 folds"),
    ],
)
def test_a_fold_the_spec_does_not_have_exits_2_naming_the_index(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    term = tmp_path / "termination"
    proc = run_trainer(
        "fold",
        write(tmp_path, manifest(WF)),
        *args,
        env={**env, "TRAINER_TERMINATION_MESSAGE_PATH": str(term)},
    )
    assert proc.returncode == 2, proc.stderr
    (last,) = [e for e in events(proc.stderr) if e.get("event") == "error"]
    assert named in last["message"] and "Traceback" not in proc.stderr
    assert not term.exists() and proc.stdout == ""  # no statistics from a fold that did not run


def test_data_that_end_before_the_walk_forward_exit_2_naming_both_dates(tmp_path: Path) -> None:
    late = {**WF, "end": "2025-07-31"}  # the bundled candles end on 2025-06-30
    proc = run_trainer(
        "fold", write(tmp_path, manifest(late)), "--index", "0", "--output", str(tmp_path / "o")
    )
    assert proc.returncode == 2, proc.stderr
    message = events(proc.stderr)[-1]["message"]
    assert "spec.walkForward.end 2025-07-31" in message and "last date 2025-06-30" in message
    assert not (tmp_path / "o" / "folds").exists()


def test_a_spec_without_walk_forward_exits_2(tmp_path: Path) -> None:
    proc = run_trainer("fold", write(tmp_path, manifest(None)), "--index", "0")
    assert proc.returncode == 2 and "spec.walkForward: not set" in proc.stderr, proc.stderr
